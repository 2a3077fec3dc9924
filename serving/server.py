"""kserve's REST server on a chosen host, in the foreground or in a background thread.

``ModelServer.start`` (what ``python -m serving`` uses in the container) always binds
0.0.0.0 and owns the process's signals. On a laptop and in tests we want 127.0.0.1 and a
server we can stop, so this builds the same pieces kserve 0.21 does — ``ModelServer``
(model repository, data plane, predictor config) and kserve's FastAPI app with its
routes, error handlers and ``/metrics`` — and runs them under our own ``uvicorn.Server``.

kserve keeps its FastAPI app in a module global, so one process hosts one REST server;
register several models on it if you need several::

    server = LocalServer([predictor], port=8080)
    server.start()          # background thread; returns when the port answers
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import Model, ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v2_datamodels import InferenceRequest

_app_built = False


class LocalServer:
    def __init__(
        self, models: list[Model], port: int, host: str = "127.0.0.1", latency_logging: bool = False
    ) -> None:
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
        rest = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.model_server.dataplane,
            self.model_server.model_repository_extension,
            port,
        )
        rest.create_application()  # routes + error handlers on kserve's global app
        _app_built = True
        from kserve.model_server import app

        install_error_handlers(app)
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
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        """Serve in the foreground until Ctrl-C / SIGTERM."""
        self._server.run()

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve()), name="kserve-rest", daemon=True
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


class GuardedDataPlane(DataPlane):
    """kserve's data plane, except that a V2 body it cannot decode is a 400.

    kserve decodes the binary tensor extension (``inference-header-content-length``) itself,
    before any model code runs, and a malformed header or body raises ValueError, KeyError
    or worse: a 500 and a reset connection. Decoding only reads the client's bytes, so any
    failure in it is the client's error."""

    def decode_inference_request(
        self, body: bytes | InferenceRequest, headers: dict, model_name: str
    ) -> InferRequest:
        try:
            return super().decode_inference_request(body, headers, model_name)
        except InvalidInput:
            raise
        except Exception as e:
            raise InvalidInput(f"malformed V2 request: {type(e).__name__}: {e}") from None


def model_server(**kwargs: Any) -> ModelServer:
    """kserve's ModelServer with ``GuardedDataPlane`` (the container uses this too)."""
    server = ModelServer(**kwargs)
    server.dataplane = GuardedDataPlane(model_registry=server.registered_models)
    return server


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default handler echoes the offending input back; a NaN or Infinity in it
    # cannot be encoded as JSON and the 422 turns into a 500. Name the field, not the value.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    where = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:3]
    )
    return JSONResponse(status_code=422, content={"error": f"invalid request body: {where}"})


def install_error_handlers(app: FastAPI) -> None:
    """Error handlers kserve 0.21 lacks; call before the app starts serving."""
    app.add_exception_handler(RequestValidationError, _validation_error)
