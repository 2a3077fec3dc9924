"""kserve's REST server, and driftloop's gRPC server beside it, on a chosen host, in the
foreground or in a background thread.

``ModelServer.start`` (what ``python -m serving`` uses in the container) always binds
0.0.0.0 and owns the process's signals. On a laptop and in tests we want 127.0.0.1 and a
server we can stop, so this builds the same pieces kserve 0.21 does — ``ModelServer``
(model repository, data plane, predictor config) and kserve's FastAPI app with its
routes, error handlers and ``/metrics`` — and runs them under our own ``uvicorn.Server``,
with the gRPC server (``serving.grpc_server``) in the same event loop.

kserve keeps its FastAPI app in a module global, so one process hosts one REST server;
register several models on it if you need several::

    server = LocalServer([predictor], port=8080, grpc_port=8081)
    server.start()          # background thread; returns when both ports answer
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn
from kserve import Model, ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.rest.server import RESTServer
from uvicorn._compat import asyncio_run

from serving import rest
from serving.dataplane import GuardedDataPlane, ServedModels
from serving.grpc_server import GrpcServer

_app_built = False


class LocalServer:
    def __init__(
        self,
        models: list[Model],
        port: int,
        host: str = "127.0.0.1",
        latency_logging: bool = False,
        grpc_port: int | None = None,
        repository_api: bool = False,
    ) -> None:
        """``grpc_port`` None: REST only; 0: a free port (read ``grpc_port`` after
        ``start``). ``repository_api``: allow model load/unload (off: a 403)."""
        global _app_built
        if _app_built:
            raise RuntimeError(
                "kserve hosts one REST app per process; register all models on one LocalServer"
            )
        self.host, self.port = host, port
        self.model_server = model_server(
            http_port=port, enable_grpc=False, enable_latency_logging=latency_logging
        )
        for m in models:
            if not m.ready:
                m.load()
            self.model_server.register_model(m)
            m.enable_latency_logging = latency_logging
        from kserve.model_server import app

        rest.install(app, self.model_server, repository_api)  # before kserve's routes
        rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.model_server.dataplane,
            self.model_server.model_repository_extension,
            port,
        )
        rest_server.create_application()  # routes + error handlers on kserve's global app
        _app_built = True
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        self.grpc = (
            None
            if grpc_port is None
            else GrpcServer(self.model_server, host, grpc_port, repository_api)
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_port(self) -> int | None:
        return None if self.grpc is None else self.grpc.port

    @property
    def grpc_address(self) -> str | None:
        return None if self.grpc is None else self.grpc.address

    async def _serve(self) -> None:
        if self.grpc is not None:
            await self.grpc.start()
        try:
            await self._server.serve()  # until Ctrl-C, SIGTERM or stop()
        finally:
            if self.grpc is not None:
                await self.grpc.stop()

    def run(self) -> None:
        """Serve in the foreground until Ctrl-C / SIGTERM."""
        asyncio_run(self._serve(), loop_factory=self._server.config.get_loop_factory())

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name="kserve-rest", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


def model_server(**kwargs: Any) -> ModelServer:
    """kserve's ModelServer with driftloop's model repository and data plane
    (``serving.dataplane``); the container uses this too."""
    server = ModelServer(registered_models=ServedModels(), **kwargs)
    server.dataplane = GuardedDataPlane(model_registry=server.registered_models)
    return server
