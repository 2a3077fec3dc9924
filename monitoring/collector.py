"""The payload collector: KServe logger CloudEvents in, Parquet micro-batches out.

Run it::

    DRIFTLOOP_STORE_URI=s3://bucket/driftloop python -m monitoring.collector --port 8080 \
        --host 0.0.0.0          # or: driftloop collector --port 8080

Endpoints:

- ``POST /``        a CloudEvent in binary mode, as KServe's payload logger sends it
                    (``ce-type`` request|response, ``ce-id`` = request id, extensions
                    ``ce-inferenceservicename``, ``ce-namespace``, ``ce-endpoint``...);
                    or, with ``Content-Type: application/cloudevents-batch+json``, a
                    batch of the same events in structured form (driftloop's own emitter,
                    ``serving/payload_log.py``); 200, or 400 with ``{"error": "..."}``
                    naming the malformed event (a bad batch is refused whole).
- ``POST /labels``  ground truth ``{"model": m, "labels": [{"request_id", "row", "label",
                    "time"}]}``; 200 ``{"written": n}``, 400 if malformed, 503 if the
                    store is down (the caller retries).
- ``GET /healthz``, ``GET /metrics`` (Prometheus).

Why a raw ASGI app and not FastAPI: at 5,000+ events/s the framework's routing and
validation cost more than the work. Under uvicorn with uvloop + httptools each event is a
header scan, one ``orjson.loads`` and a dict insert on the loop; decoding, Parquet
encoding and store writes happen in one flush thread. SIGTERM → uvicorn stops accepting,
finishes in-flight requests, then the lifespan shutdown flushes everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from driftloop import entrypoint
from driftloop.errors import DataError, StoreError
from driftloop.payloads import BATCH_CONTENT_TYPE, REQUEST, RESPONSE, valid_name, write_labels
from driftloop.settings import Settings
from driftloop.store import Store, open_store
from monitoring.buffer import BatchWriter, CollectorConfig, Metrics, Pairer
from monitoring.decode import Event, check_request, check_response

log = logging.getLogger("driftloop.collector")
MAX_BODY = 16 * 1024 * 1024  # one inference payload; larger is refused with 413
_JSON = [(b"content-type", b"application/json")]
BATCH = BATCH_CONTENT_TYPE.encode()


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class Collector:
    """The ASGI application. ``receive_event`` is the whole per-event hot path."""

    def __init__(self, store: Store, cfg: CollectorConfig | None = None) -> None:
        self.store, self.cfg = store, cfg or CollectorConfig()
        self.metrics = Metrics()
        self.pairer = Pairer(self.cfg, self.metrics)
        self.writer = BatchWriter(store, self.cfg, self.metrics)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._last_flush = time.monotonic()

    # -- the hot path ---------------------------------------------------------------------
    def receive_event(
        self, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes]:
        """One binary-mode CloudEvent (KServe's logger): attributes in ``ce-*`` headers,
        the payload as the body. Buffers it; returns (status, response body)."""
        # ASGI lowercases header names; "ce-type" -> attribute "type".
        attrs = {
            k[3:].decode("latin-1"): v.decode("latin-1") for k, v in headers if k[:3] == b"ce-"
        }
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            return self._bad(f"body is not valid JSON: {e}")
        try:
            rid, ev = self._event(attrs, doc)
        except DataError as e:
            return self._bad(str(e))
        self._accept(rid, ev)
        return 200, b""

    def receive_batch(self, body: bytes) -> tuple[int, bytes]:
        """CloudEvents batched mode (``application/cloudevents-batch+json``): a JSON array
        of structured events, attributes as keys and the payload under ``data``; driftloop's
        own emitter sends these. All or nothing: one malformed event refuses the batch."""
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            return self._bad(f"batch is not valid JSON: {e}")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return self._bad("a CloudEvents batch must be a JSON array of event objects")
        events = []
        for i, item in enumerate(items):
            try:
                events.append(self._event(item, item.get("data")))
            except DataError as e:
                return self._bad(f"event {i} of the batch: {e}")
        for rid, ev in events:
            self._accept(rid, ev)
        return 200, b""

    def _event(self, attrs: dict[str, Any], doc: Any) -> tuple[str, Event]:
        """Validate one event's attributes and payload; DataError names the problem."""
        ce_type, rid = attrs.get("type"), attrs.get("id")
        if ce_type != REQUEST and ce_type != RESPONSE:
            raise DataError(f"unknown or missing ce-type {_show(ce_type)}")
        if not isinstance(rid, str) or not rid:
            raise DataError("missing ce-id (the request id that pairs request and response)")
        if not isinstance(doc, dict):
            raise DataError("body must be a JSON object")
        endpoint = attrs.get("endpoint") or "default"
        if not valid_name(endpoint):
            raise DataError(f"invalid ce-endpoint {_show(endpoint)}")
        is_req = ce_type == REQUEST
        rows = check_request(doc) if is_req else 0
        if not is_req:
            check_response(doc)
        ev = Event(
            is_req,
            doc,
            time.time(),
            _text(attrs.get("time")),
            _text(attrs.get("inferenceservicename")),
            _text(attrs.get("namespace")),
            endpoint,
            rows,
        )
        return rid, ev

    def _accept(self, rid: str, ev: Event) -> None:
        (self.metrics.requests if ev.is_request else self.metrics.responses).inc()
        if self.pairer.add(rid, ev) and self._wake is not None:
            self._wake.set()

    def _bad(self, message: str) -> tuple[int, bytes]:
        self.metrics.invalid.inc()
        self.metrics.dropped.labels("malformed").inc()
        return 400, orjson.dumps({"error": message})

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return None
        method, path = scope["method"], scope["path"]
        body, too_big = await _read_body(receive)
        headers = _JSON
        if too_big:
            self.metrics.dropped.labels("too_large").inc()
            status, out = 413, orjson.dumps({"error": f"body larger than {MAX_BODY} bytes"})
        elif method == "POST" and path == "/":
            if _content_type(scope["headers"]) == BATCH:
                status, out = self.receive_batch(body)
            else:
                status, out = self.receive_event(scope["headers"], body)
        elif method == "POST" and path == "/labels":
            status, out = await self._labels(body)
        elif method == "GET" and path == "/healthz":
            status, out = 200, b'{"status":"ok"}'
        elif method == "GET" and path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self.pairer.expire(time.time())  # refresh the gauges
            status, out = 200, generate_latest(self.metrics.registry)
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        else:
            status, out = 404, orjson.dumps({"error": f"no route {method} {path}"})
        headers = [*headers, (b"content-length", str(len(out)).encode())]  # not chunked
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    async def _labels(self, body: bytes) -> tuple[int, bytes]:
        try:
            doc = orjson.loads(body)
            if (
                not isinstance(doc, dict)
                or not isinstance(doc.get("model"), str)
                or not isinstance(doc.get("labels"), list)
            ):
                raise DataError('expected {"model": str, "labels": [...]}')
            keys = await asyncio.to_thread(write_labels, self.store, doc["model"], doc["labels"])
        except (orjson.JSONDecodeError, DataError) as e:
            return 400, orjson.dumps({"error": str(e)})
        except StoreError as e:
            self.metrics.flush_errors.inc()
            return 503, orjson.dumps({"error": f"store unavailable, retry: {e}"})
        return 200, orjson.dumps({"written": len(doc["labels"]), "files": len(keys)})

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

    # -- flushing -------------------------------------------------------------------------
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._flush_loop())
        log.info("collector writing to %s", self.store.uri)

    async def _flush_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):  # woken early by a full batch
                await asyncio.wait_for(self._wake.wait(), self.cfg.tick_s)
            self._wake.clear()
            self.pairer.expire(time.time())
            backlog_due = (
                self.writer.backlog_rows()
                and time.monotonic() - self._last_flush >= self.cfg.max_age_s
            )
            if self.pairer.due() or backlog_due:
                await self.flush()

    async def flush(self) -> int:
        """Write every paired row now (off the loop thread); returns rows written."""
        batch = self.pairer.take()
        self._last_flush = time.monotonic()
        try:
            return await asyncio.to_thread(self.writer.write, batch)
        except Exception:  # a bug, not bad input: log it loudly and keep serving
            log.exception("flush of %d pairs failed", len(batch))
            self.metrics.flush_errors.inc()
            return 0

    async def stop(self) -> None:
        """Graceful stop: unpaired halves are counted, every paired row is written."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        unpaired = self.pairer.drain_unpaired()
        batch = self.pairer.take()
        lost = await asyncio.to_thread(self.writer.close, batch)
        log.info(
            "collector stopped: %d pairs flushed, %d unpaired, %d rows lost",
            len(batch),
            unpaired,
            lost,
        )


def _content_type(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    for k, v in headers:
        if k == b"content-type":
            return v.split(b";", 1)[0].strip().lower()
    return b""


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        if not msg.get("more_body"):
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), size > MAX_BODY


def serve(settings: Settings, host: str, port: int, cfg: CollectorConfig | None = None) -> None:
    """Run the collector until SIGTERM/SIGINT, then flush and return."""
    import uvicorn

    app = Collector(open_store(settings), cfg)
    # uvicorn re-raises SIGTERM once it has shut down gracefully; with the default handler
    # that would end the process as "killed by signal" although every row was flushed.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = CollectorConfig()
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a pod (default 127.0.0.1)")
    p.add_argument("--batch-rows", type=int, default=d.batch_rows, help="rows per Parquet file")
    p.add_argument(
        "--max-age",
        type=float,
        default=d.max_age_s,
        help="seconds before a partial batch is flushed",
    )
    p.add_argument(
        "--unpaired-ttl",
        type=float,
        default=d.unpaired_ttl_s,
        help="seconds an unpaired half waits for its other half",
    )


def config_from(args: argparse.Namespace) -> CollectorConfig:
    return CollectorConfig(
        batch_rows=args.batch_rows, max_age_s=args.max_age, unpaired_ttl_s=args.unpaired_ttl
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(settings, args.host, args.port, config_from(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return entrypoint.main(
        "python -m monitoring.collector",
        "KServe payload logger -> Parquet collector",
        add_arguments,
        run,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
