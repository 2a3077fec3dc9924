"""The collector's HTTP plumbing: a raw ASGI app (uvicorn, uvloop, httptools), no framework.

``AsgiApp`` reads bodies within two bounds (one body: ``MAX_BODY``, 413; all bodies in
flight: ``cfg.max_inflight_bytes``, 503), routes ``POST /``, ``POST /labels``, ``GET
/healthz`` and ``GET /metrics`` to the subclass (``monitoring.collector.Collector``) and
runs its ``start``/``stop`` from the lifespan protocol. ``scan_headers`` finds the content
type, the Authorization value and the CloudEvent attributes in one pass over the headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

MAX_BODY = 16 * 1024 * 1024  # one inference payload; larger is refused with 413
JSON = [(b"content-type", b"application/json")]
Reply = tuple[int, bytes]
AUTH_MESSAGES = {
    401: "missing bearer token (Authorization: Bearer <collector token>)",
    403: "wrong bearer token",
}


def error_reply(status: int, message: str) -> Reply:
    return status, orjson.dumps({"error": message})


# The CloudEvent attributes an event's ce-* headers carry (ASGI lowercases header names).
_ATTRS = {
    f"ce-{a}".encode(): a
    for a in ("type", "id", "time", "endpoint", "inferenceservicename", "namespace")
}


def scan_headers(
    headers: Sequence[tuple[bytes, bytes]],
) -> tuple[bytes, bytes | None, dict[str, str]]:
    """(content type, Authorization value, CloudEvent attributes) in one pass."""
    content_type, authorization, attrs = b"", None, {}
    for k, v in headers:
        name = _ATTRS.get(k)
        if name is not None:
            attrs[name] = v.decode("latin-1")
        elif k == b"content-type":
            content_type = v.split(b";", 1)[0].strip().lower()
        elif k == b"authorization":
            authorization = v
    return content_type, authorization, attrs


class AsgiApp:
    """Routing and body limits; the subclass does the work."""

    cfg: Any  # has max_inflight_bytes
    inflight_bytes: int

    async def post_events(self, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Reply:
        raise NotImplementedError

    async def post_labels(self, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Reply:
        raise NotImplementedError

    def metrics_page(self) -> bytes:
        raise NotImplementedError

    def refuse(self, status: int, reason: str, message: str) -> Reply:
        return error_reply(status, message)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return None
        body, problem = await self._read_body(receive)
        try:  # the body counts as in flight until it is answered (or held as an event)
            status, out, headers = await self._route(scope, body, problem)
        finally:
            self.inflight_bytes -= len(body)
        headers = [*headers, (b"content-length", str(len(out)).encode())]  # not chunked
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="driftloop-collector"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    async def _route(self, scope: dict, body: bytes, problem: int) -> tuple[int, bytes, list]:
        method, path = scope["method"], scope["path"]
        if problem == 413:
            return *self.refuse(413, "too_large", f"body larger than {MAX_BODY} bytes"), JSON
        if problem:
            return *self.refuse(503, "busy", "too many bodies being received: retry"), JSON
        if method == "POST" and path == "/":
            return *(await self.post_events(scope["headers"], body)), JSON
        if method == "POST" and path == "/labels":
            return *(await self.post_labels(scope["headers"], body)), JSON
        if method == "GET" and path == "/healthz":
            return 200, b'{"status":"ok"}', JSON
        if method == "GET" and path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            return 200, self.metrics_page(), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        return *error_reply(404, f"no route {method} {path}"), JSON

    async def _read_body(self, receive: Any) -> tuple[bytes, int]:
        """The body, and 0, 413 (larger than MAX_BODY) or 503 (bodies in flight together
        would exceed ``max_inflight_bytes``); an oversized body is read and dropped. The
        body's bytes stay counted in ``inflight_bytes``: the caller releases them."""
        chunks: list[bytes] = []
        size = problem = 0
        while True:
            try:
                msg = await receive()
            except BaseException:  # cancelled (shutdown): nothing will release them
                self.inflight_bytes -= sum(map(len, chunks))
                raise
            chunk = msg.get("body", b"")
            size += len(chunk)
            if not problem:
                self.inflight_bytes += len(chunk)
                chunks.append(chunk)
                if self.inflight_bytes > self.cfg.max_inflight_bytes:
                    problem = 503
            if size > MAX_BODY:
                problem = 413  # too large to ever take: retrying would not help
            if problem and chunks:
                self.inflight_bytes -= sum(map(len, chunks))
                chunks = []
            if not msg.get("more_body"):
                return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), problem

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
