"""What driftloop adds to kserve's REST app, installed before kserve registers its routes
(``install(app, server)``; the first matching route wins):

- versioned V2 paths (``/v2/models/<name>/versions/<v>[/ready|/infer]``) answer for the
  version served and are a 404 naming it for any other (kserve 0.21 answers 501);
- model load/unload (``/v2/repository/models/<name>/load|unload``) are a 403 unless the
  server was started with them;
- request bodies are bounded (``MAX_BODY_BYTES``, 413) and may be gzip- or
  deflate-encoded; the decompressed size is bounded too (a zip bomb is a 413);
- error handlers kserve lacks (a 422 that names the field, never echoes the value).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.dataplane import RepositoryDisabled, ServedModels, field_errors, served_model

# The largest request body, before and after decompression: the same bound as kserve's
# gRPC messages (8 MiB), so neither protocol takes what the other refuses. A 1,000-row
# request (the default row limit) is ~200 KB of JSON.
MAX_BODY_BYTES = MAX_GRPC_MESSAGE_LENGTH
_ENCODINGS = {"gzip", "x-gzip", "deflate"}


def install(app: FastAPI, server: ModelServer, repository_api: bool = False) -> None:
    """Call once, before kserve's ``RESTServer.create_application`` and before serving."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RepositoryDisabled, _repository_disabled)
    app.max_body_size = MAX_BODY_BYTES  # FastAPI's own limit: a 413 past it
    app.add_middleware(DecompressRequests, max_bytes=MAX_BODY_BYTES)
    _add_routes(app, server, repository_api)


def _add_routes(app: FastAPI, server: ModelServer, repository_api: bool) -> None:
    models = server.registered_models
    assert isinstance(models, ServedModels), "build the ModelServer with serving.server"
    v2 = V2Endpoints(server.dataplane, server.model_repository_extension)

    async def metadata(model_name: str, model_version: str) -> Any:
        served_model(models, model_name, model_version)
        return await v2.model_metadata(model_name)

    async def ready(model_name: str, model_version: str) -> Any:
        served_model(models, model_name, model_version)
        return await v2.model_ready(model_name)

    async def infer(
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        model_version: str,
        request_body: InferenceRequest | bytes,
    ) -> Any:
        served_model(models, model_name, model_version)
        return await v2.infer(raw_request, raw_response, model_name, request_body)

    async def load(model_name: str) -> Any:
        if not repository_api:
            raise RepositoryDisabled("load")
        models.check_hosted(model_name)
        return await v2.load(model_name)

    async def unload(model_name: str) -> Any:
        if not repository_api:
            raise RepositoryDisabled("unload")
        models.check_hosted(model_name)
        return await v2.unload(model_name)

    versioned = "/v2/models/{model_name}/versions/{model_version}"
    app.add_api_route(versioned, metadata, methods=["GET"], include_in_schema=False)
    app.add_api_route(versioned + "/ready", ready, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        versioned + "/infer", infer, methods=["POST"], response_model=None, include_in_schema=False
    )
    repository = "/v2/repository/models/{model_name}"
    app.add_api_route(repository + "/load", load, methods=["POST"], include_in_schema=False)
    app.add_api_route(repository + "/unload", unload, methods=["POST"], include_in_schema=False)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default handler echoes the offending input back; a NaN or Infinity in it
    # cannot be encoded as JSON and the 422 turns into a 500. Name the field, not the value.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(
        status_code=422, content={"error": f"invalid request body: {field_errors(list(errors))}"}
    )


async def _repository_disabled(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=403, content={"error": str(getattr(exc, "reason", exc))})


class _TooLarge(Exception):
    pass


def inflate(body: bytes, max_bytes: int) -> bytes:
    """gzip or zlib ("deflate") data, decompressed to at most ``max_bytes``: ``_TooLarge``
    past it (never more in memory), ``zlib.error`` when it is not a whole stream."""
    out = bytearray()
    data = body
    while data:  # a gzip body may hold several members, one after the other
        d = zlib.decompressobj(wbits=47)  # 32 + 15: detect the gzip or zlib header
        out += d.decompress(data, max_bytes + 1 - len(out))
        if len(out) > max_bytes or d.unconsumed_tail:
            raise _TooLarge
        if not d.eof:
            raise zlib.error("the compressed body is truncated")
        data = d.unused_data
    return bytes(out)


class DecompressRequests:
    """ASGI middleware: a ``Content-Encoding: gzip|deflate`` request body reaches the app
    decompressed, or the client gets a 413 (too large once decompressed), 400 (corrupt) or
    415 (another encoding). Bodies without an encoding pass through untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        encoding = _header(scope, b"content-encoding") if scope["type"] == "http" else None
        if encoding is None or encoding in ("", "identity"):
            await self.app(scope, receive, send)
            return
        if encoding not in _ENCODINGS:
            await _error(send, 415, f"Content-Encoding {encoding!r} is not supported: send gzip")
            return
        chunks = []
        while True:  # the compressed size is bounded by FastAPI's limit, outside this one
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            body = inflate(b"".join(chunks), self.max_bytes)
        except _TooLarge:
            await _error(send, 413, f"the request body decompresses to over {self.max_bytes} bytes")
            return
        except zlib.error as e:
            await _error(send, 400, f"the {encoding} request body cannot be decompressed: {e}")
            return
        headers = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1").strip().lower())
    return None


async def _error(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
