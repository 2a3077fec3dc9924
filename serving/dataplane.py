"""What both servers (REST and gRPC) share: kserve's data plane and model repository with
the rules driftloop adds, so the two protocols cannot disagree.

- ``ServedModels``: kserve's model repository, remembering every model the server was
  started with. Readiness (``/v2/health/ready``, gRPC ``ServerReady``) is true only while
  each of them is loaded and ready, so Kubernetes stops routing to a pod whose model was
  unloaded; ``load`` brings an unloaded model back (kserve 0.21's is a no-op).
- ``GuardedDataPlane``: kserve's data plane, except that a V2 body it cannot decode is a
  400, and a V1 or V2 body is JSON when the protocol says it is, whatever the client's
  ``Content-Type`` (``curl -d`` sends form encoding, some clients send none).
- ``served_model``: the version rule. A request naming a version is answered by the
  model only if that is the version it serves; otherwise ``VersionNotServed`` (HTTP 404,
  gRPC NOT_FOUND) names the version that is.
- ``RepositoryDisabled``: model load/unload is off unless the server is started with it
  (HTTP 403, gRPC PERMISSION_DENIED).
"""

from __future__ import annotations

from cloudevents.sdk.converters.util import has_binary_headers
from grpc_interceptor.exceptions import PermissionDenied
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER, PredictorProtocol
from kserve.errors import InvalidInput, ModelNotFound
from kserve.model import BaseKServeModel
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import JSON_HEADERS, DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

REPOSITORY_FLAG = "--enable_repository_api"  # `driftloop serve`: --enable-repository-api


class VersionNotServed(ModelNotFound):
    """A request for a version this server does not serve: 404 / NOT_FOUND."""

    def __init__(self, name: str, asked: str, served: str | None) -> None:
        what = f"version {served}" if served else "no numbered version"
        self.reason = (
            f"model {name!r} version {asked!r} is not served here; this server serves {what}"
        )


class RepositoryDisabled(PermissionDenied):
    """Model load/unload asked of a server started without it: 403 / PERMISSION_DENIED."""

    def __init__(self, action: str) -> None:
        self.reason = (
            f"model {action} is disabled on this server; start it with {REPOSITORY_FLAG} "
            "to allow it (anyone who can reach the port can then switch the model off)"
        )
        super().__init__(self.reason)


def served_version(model: BaseKServeModel) -> str | None:
    """The version a model answers for (the Predictor's registry version), if it has one."""
    version = getattr(model, "served_version", None)
    return None if version is None else str(version)


class ServedModels(ModelRepository):
    """kserve's model repository that remembers what it hosts, so readiness and ``load``
    mean something after an ``unload``."""

    def __init__(self) -> None:
        super().__init__()
        self.hosted: dict[str, BaseKServeModel] = {}

    def update(self, model: BaseKServeModel, name: str | None = None) -> None:
        super().update(model, name)
        self.hosted[name or model.name] = model

    def check_hosted(self, name: str) -> None:
        """Load/unload name a model this server was started with, or it is a 404."""
        if name not in self.hosted:
            raise ModelNotFound(name)

    def load(self, name: str) -> bool:
        model = self.hosted[name]
        if not model.ready:
            model.load()
        self.models[name] = model
        return bool(model.ready)

    async def all_ready(self) -> bool:
        for name in self.hosted:
            if not await self.is_model_ready(name):
                return False
        return bool(self.hosted)


def served_model(repository: ModelRepository, name: str, version: str | None) -> BaseKServeModel:
    """The model registered under ``name`` if it serves ``version`` (empty: any)."""
    model = repository.get_model(name)
    if model is None:
        raise ModelNotFound(name)
    if version:
        served = served_version(model)
        if version != served:
            raise VersionNotServed(name, version, served)
    return model


class GuardedDataPlane(DataPlane):
    """kserve's data plane with driftloop's rules (see the module docstring).

    kserve decodes the binary tensor extension (``inference-header-content-length``) itself,
    before any model code runs, and a malformed header or body raises ValueError, KeyError
    or worse: a 500 and a reset connection. Decoding only reads the client's bytes, so any
    failure in it is the client's error."""

    def __init__(self, model_registry: ModelRepository) -> None:
        super().__init__(model_registry=model_registry)

    async def ready(self) -> bool:
        if not await super().ready():
            return False
        registry = self._model_registry
        return await registry.all_ready() if isinstance(registry, ServedModels) else True

    async def model_metadata(self, model_name: str) -> dict:
        metadata: dict = await super().model_metadata(model_name)
        version = served_version(self.get_model_from_registry(model_name))
        if version is not None:
            metadata["versions"] = [version]
        return metadata

    def decode(
        self,
        body: object,
        headers: dict,
        protocol_version: str = PredictorProtocol.REST_V1.value,
        model_name: str | None = None,
    ) -> tuple:
        if (
            isinstance(body, bytes)
            and headers
            and protocol_version == PredictorProtocol.REST_V1.value
            and headers.get("content-type") not in JSON_HEADERS
            and not has_binary_headers(headers)
        ):
            # A V1 body is JSON by the protocol: parse it as such whatever the content type
            # (a body that is not JSON is still refused, by kserve's own parser).
            headers = {k: v for k, v in headers.items() if k != "content-type"}
        return super().decode(body, headers, protocol_version, model_name)

    def decode_inference_request(
        self, body: bytes | InferenceRequest, headers: dict, model_name: str
    ) -> InferRequest:
        try:
            if isinstance(body, bytes) and INFERENCE_CONTENT_LENGTH_HEADER not in headers:
                # No binary extension header: the body is the JSON request object (FastAPI
                # passes it on as bytes when the content type does not say JSON).
                body = InferenceRequest.model_validate_json(body)
            return super().decode_inference_request(body, headers, model_name)
        except InvalidInput:
            raise
        except ValidationError as e:
            raise InvalidInput(f"malformed V2 request: {field_errors(e.errors())}") from None
        except Exception as e:
            raise InvalidInput(f"malformed V2 request: {type(e).__name__}: {e}") from None


def field_errors(errors: list) -> str:
    """pydantic/FastAPI validation errors as one line naming the fields, never the values
    (a NaN or Infinity in a value cannot be encoded as JSON)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:3]
    )
