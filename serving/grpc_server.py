"""The Open Inference Protocol over gRPC: kserve's servicer with driftloop's rules.

kserve 0.21's servicer (``kserve/protocol/grpc/servicer.py``) hands the model a request
whose raw contents (``raw_input_contents``, what standard clients such as tritonclient
always send) are not in the tensors' ``data``, ignores ``model_version``, and lets anyone
unload the model. This one overrides those RPCs and keeps the rest:

    ModelInfer        version rule; typed and raw contents never mixed; raw contents
                      become the tensors' data (``protocol.raw_values``), exactly as kserve
                      already does for the REST binary extension, so the one V2 decoder
                      (``protocol.decode_v2``) checks both; parameters as plain values
    ModelReady/ModelMetadata   version rule; metadata lists the served version
    RepositoryModel*  PERMISSION_DENIED unless the server was started with them

The server binds the host it is given (127.0.0.1 on a laptop; the pod's addresses in the
container) and runs in the same event loop as the REST server::

    grpc = GrpcServer(model_server, "127.0.0.1", 8081)
    await grpc.start(); ...; await grpc.stop()
"""

from __future__ import annotations

from concurrent import futures

from grpc import ServicerContext, aio
from kserve import ModelServer
from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, InferResponse, to_http_parameters
from kserve.utils.utils import to_headers

from serving import protocol
from serving.dataplane import RepositoryDisabled, ServedModels, served_model, served_version

# gRPC handler threads: the servicer is async and runs on the event loop; these only
# serve the few synchronous paths grpcio keeps. kserve's --max_threads default.
DEFAULT_MAX_WORKERS = 4


def check_contents(request: pb.ModelInferRequest) -> None:
    """Every input sends its values one way: all typed ``contents`` or all raw."""
    if not request.raw_input_contents:
        return
    for t in request.inputs:
        if t.HasField("contents"):
            raise InvalidInput(
                f"input {t.name!r} has typed contents, but the request also sends "
                "raw_input_contents: send every input one way"
            )
    if len(request.raw_input_contents) != len(request.inputs):
        raise InvalidInput(
            f"{len(request.raw_input_contents)} raw_input_contents for "
            f"{len(request.inputs)} inputs: send one per input, in the inputs' order"
        )


class Servicer(InferenceServicer):
    def __init__(self, server: ModelServer, repository_api: bool = False) -> None:
        super().__init__(server.dataplane, server.model_repository_extension)
        models = server.registered_models
        assert isinstance(models, ServedModels), "build the ModelServer with serving.server"
        self._models = models
        self._repository_api = repository_api

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: ServicerContext
    ) -> pb.ModelInferResponse:
        served_model(self._models, request.model_name, request.model_version)
        check_contents(request)
        infer_request = InferRequest.from_grpc(request)
        infer_request.parameters = (
            to_http_parameters(request.parameters) if request.parameters else None
        )
        for t, raw in zip(infer_request.inputs, request.raw_input_contents, strict=False):
            t.data = protocol.raw_values(t.name, t.datatype, t.shape, raw)
        response, _ = await self._data_plane.infer(
            model_name=request.model_name, request=infer_request, headers=to_headers(context)
        )
        if isinstance(response, InferResponse):
            return response.to_grpc()
        raise InvalidInput(f"model {request.model_name!r} does not answer V2 requests")

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        served_model(self._models, request.name, request.version)
        return await super().ModelReady(request, context)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context
    ) -> pb.ModelMetadataResponse:
        model = served_model(self._models, request.name, request.version)
        response = await super().ModelMetadata(request, context)
        if (version := served_version(model)) is not None:
            response.versions.append(version)  # kserve's servicer drops the data plane's
        return response

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context
    ) -> pb.RepositoryModelLoadResponse:
        if not self._repository_api:
            raise RepositoryDisabled("load")
        self._models.check_hosted(request.model_name)
        await self._mode_repository_extension.load(request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context
    ) -> pb.RepositoryModelUnloadResponse:
        if not self._repository_api:
            raise RepositoryDisabled("unload")
        self._models.check_hosted(request.model_name)
        await self._mode_repository_extension.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)


class GrpcServer:
    def __init__(
        self,
        server: ModelServer,
        host: str,
        port: int,
        repository_api: bool = False,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_message_bytes: int = MAX_GRPC_MESSAGE_LENGTH,
    ) -> None:
        self.host, self.port = host, port
        self._servicer = Servicer(server, repository_api)
        self._max_workers, self._max_message_bytes = max_workers, max_message_bytes
        self._server: aio.Server | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; ``port`` 0 picks a free port (read ``port`` after)."""
        server = aio.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers),
            interceptors=(ExceptionToStatusInterceptor(),),
            options=[
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer, server)
        self.port = server.add_insecure_port(self.address)
        await server.start()
        self._server = server

    async def serve(self) -> None:
        await self.start()
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, sig: int | None = None, grace: float = 5.0) -> None:
        """Finish in-flight calls (up to ``grace`` seconds); ``sig`` as kserve passes it."""
        if self._server is not None:
            await self._server.stop(grace)
