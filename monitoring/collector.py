"""The payload collector: KServe logger CloudEvents in, Parquet out, nothing acknowledged lost.

Run it::

    DRIFTLOOP_STORE_URI=s3://bucket/driftloop DRIFTLOOP_COLLECTOR_TOKEN_FILE=/secrets/token \\
        python -m monitoring.collector --host 0.0.0.0 --port 8080 --data-dir /data
    driftloop collector --port 8081        # on one machine: open, a data dir under /tmp

Endpoints:

- ``POST /``        a CloudEvent in binary mode, as KServe's payload logger sends it
                    (``ce-type`` request|response, ``ce-id`` = request id, extensions
                    ``ce-inferenceservicename``, ``ce-namespace``, ``ce-endpoint``...): 200,
                    or 4xx ``{"error": "..."}`` naming what is wrong. With ``Content-Type:
                    application/cloudevents-batch+json``, a batch of the same events in
                    structured form (driftloop's emitter, ``serving/payload_log.py``): the
                    good ones are kept, the bad ones refused alone: 200 ``{"accepted": n,
                    "rejected": [{"index": i, "id": ..., "error": ...}]}`` (422 if none was
                    accepted). 503 ``{"error"}`` when it cannot take more now: retry.
- ``POST /labels``  ground truth ``{"model": m, "labels": [{"request_id", "row", "label",
                    "time"}]}``: 200 ``{"written": n}`` once in the store; 400 naming the
                    bad label (nothing written); 422 for an unregistered model; 503 if the
                    store is down (retry). ``time`` at most ``--max-label-skew`` ahead.
- ``GET /healthz``, ``GET /metrics`` (Prometheus): open.

Who may write (``monitoring/admission.py``): with ``collector_token`` set, event and label
posts need ``Authorization: Bearer <token>`` (401/403); ``--open-events`` admits binary-mode
events without it, for KServe's logger, which sends no header (protect the port with a
NetworkPolicy then). Events only for registered models and committed versions (422);
endpoints ``default``, ``canary`` and ``shadow`` (a shadow version's pairs share the served
model's request ids: halves pair by request id and endpoint). Every value is checked on arrival
(``driftloop/decode.py``, with the predictor's own ``driftloop/values.py``).

What 200 means: every event is appended to a write-ahead log under ``--data-dir`` and
fsynced (group commit) before it is acknowledged (``monitoring/wal.py``); the log is
replayed on start, and a segment is deleted only once its events are in the store (as
rows, or as half-records that ``read_logs`` pairs later). So:

- a crash of the collector (kill -9, OOM, a bug) or of its container loses nothing it
  acknowledged: the restarted container finds the log in the pod's emptyDir;
- SIGTERM (a pod deleted, a rollout) writes everything to the store, unpaired halves as
  half-records; if the store is unreachable for ``shutdown_retry_s``, what is left stays
  in the log for the next start in the same data dir. A *deleted pod* takes its emptyDir
  with it: only then are such rows lost (a PersistentVolume as data dir keeps them);
- the loss of the node or of the disk before a segment reached the store loses it.

Replicas: pairs pair in one replica when both halves come in one batch (driftloop's
emitter); halves that do not meet within ``--unpaired-ttl`` are stored unpaired and paired
by the read path, which also drops copies (a retry, a replay) by ``(request_id, row)``.

Why a raw ASGI app and not FastAPI: at 5,000+ events/s the framework's routing and
validation cost more than the work. Under uvicorn with uvloop + httptools each event is a
header scan, one ``orjson.loads``, its checks, a log append and a dict insert on the loop;
fsync, decoding, Parquet encoding and store writes happen in worker threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
from pydantic import SecretStr

from driftloop import entrypoint
from driftloop.decode import BATCH_CONTENT_TYPE, Event, decode_pair, parse_event
from driftloop.errors import DataError, StoreError
from driftloop.payloads import write_labels
from driftloop.settings import Settings, read_token
from driftloop.store import Store, open_store
from monitoring.admission import Admission, Auth, Parsed, Rejected, parse_batch
from monitoring.buffer import BatchWriter, CollectorConfig, Metrics, Pairer, Written
from monitoring.http import AUTH_MESSAGES, AsgiApp, Reply, error_reply, scan_headers
from monitoring.wal import WriteAheadLog, encode

log = logging.getLogger("driftloop.collector")
BATCH = BATCH_CONTENT_TYPE.encode()


class Collector(AsgiApp):
    """The ASGI application. ``post_events`` is the whole per-event hot path."""

    def __init__(
        self,
        store: Store,
        cfg: CollectorConfig | None = None,
        data_dir: Path | None = None,
        token: SecretStr | None = None,
        open_events: bool = False,
    ) -> None:
        self.store, self.cfg = store, cfg or CollectorConfig()
        self.metrics = Metrics()
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="driftloop-collector-"))
        self.wal = WriteAheadLog(self.data_dir)
        self.auth, self.admission = Auth(token, open_events), Admission(store)
        self.pairer = Pairer(self.cfg, self.metrics, self.wal.release)
        self.writer = BatchWriter(store, self.cfg, self.metrics, self.admission.kinds)
        self.writing_bytes = self.inflight_bytes = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._last_flush = time.monotonic()

    # -- the hot path ---------------------------------------------------------------------
    async def post_events(self, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Reply:
        """``POST /``: one binary-mode event, or a batch of structured ones."""
        content_type, authorization, attrs = scan_headers(headers)
        batch = content_type == BATCH
        if denied := self.auth.check(authorization, binary_event=not batch):
            return self.refuse(denied, "unauthorized", AUTH_MESSAGES[denied])
        if not batch:
            return await self._post_one(attrs, body)
        try:
            events, rejected = parse_batch(body)
        except DataError as e:
            return self.refuse(400, "malformed", str(e))
        try:
            events = await self._admit(events, rejected)
        except StoreError as e:
            return self.refuse(503, "store_unavailable", f"cannot check the registry, retry: {e}")
        if events and (busy := self._busy()):
            return self.refuse(503, "busy", busy)
        if events and (failed := await self._persist(events)):
            return failed
        for _, status, _, _ in rejected:
            self.metrics.invalid.inc()
            self.metrics.rejected.labels("unregistered" if status == 422 else "malformed").inc()
        status = 200 if events or not rejected else 422
        verdicts = [{"index": i, "id": rid, "error": msg} for i, rid, _, msg in _named(rejected)]
        return status, orjson.dumps({"accepted": len(events), "rejected": verdicts})

    async def _post_one(self, attrs: dict[str, str], body: bytes) -> Reply:
        """One binary-mode event (KServe's logger): the hot path, kept short."""
        try:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise DataError(f"body is not valid JSON: {e}") from None
            rid, ev = parse_event(attrs, body, doc, time.time())
        except DataError as e:
            return self.refuse(400, "malformed", str(e))
        key = (ev.model, ev.version)
        admitted = self.admission.cached(key)
        if admitted is None:
            try:
                admitted = (await self.admission.admit([key]))[key]
            except StoreError as e:
                return self.refuse(503, "store_unavailable", f"cannot check the registry: {e}")
        if not admitted:
            return self.refuse(422, "unregistered", _unregistered(ev))
        if busy := self._busy():
            return self.refuse(503, "busy", busy)
        return await self._persist([(0, rid, ev)]) or (200, b"")

    async def _persist(self, events: list[Parsed]) -> Reply | None:
        """Append to the write-ahead log, wait for the group commit, then buffer; a
        reply only if the disk failed."""
        for _, rid, ev in events:
            ev.seg = self.wal.append(encode(rid, ev))
        try:
            await self.wal.commit()
        except OSError as e:
            log.error("write-ahead log: %s", e)
            return self.refuse(503, "disk", f"cannot persist the events, retry: {e}")
        for _, rid, ev in events:
            self._accept(rid, ev)
        return None

    async def _admit(self, events: list[Parsed], rejected: list[Rejected]) -> list[Parsed]:
        """Registered models and committed versions only; in a batch, pairs that decode."""
        verdict = await self.admission.admit((ev.model, ev.version) for _, _, ev in events)
        kept = []
        for i, rid, ev in events:
            if verdict[(ev.model, ev.version)]:
                kept.append((i, rid, ev))
            else:
                rejected.append((i, 422, f"event {i}: {_unregistered(ev)}", rid))
        halves: dict[tuple[str, str], list[Parsed]] = {}
        for p in kept:
            halves.setdefault((p[1], p[2].endpoint), []).append(p)
        bad: set[int] = set()
        for (rid, _), group in halves.items():
            req = next((p for p in group if p[2].is_request), None)
            resp = next((p for p in group if not p[2].is_request), None)
            if req is None or resp is None or req[2].doc is None:
                continue
            kinds = self.admission.cached_kinds(resp[2].model, resp[2].version)
            try:
                decode_pair(rid, req[2], resp[2], kinds)
            except (DataError, ValueError) as e:
                for i, _, _ in group:
                    bad.add(i)
                    rejected.append((i, 400, f"event {i}: the pair does not decode: {e}", rid))
        for _, _, ev in kept:
            ev.doc = None
        return [p for p in kept if p[0] not in bad]

    def _busy(self) -> str:
        """Why no more events fit now ('' if they do)."""
        held = self.pairer.ready_bytes + self.pairer.spill_bytes
        held += self.writing_bytes + self.writer.backlog_bytes
        if held > self.cfg.max_buffered_bytes:
            bound = self.cfg.max_buffered_bytes >> 20
            return f"{held >> 20} MiB wait for the store (bound {bound} MiB): retry"
        if self.wal.disk_bytes > self.cfg.max_wal_bytes:
            return "the write-ahead log is full (the store is unreachable): retry"
        return ""

    def _accept(self, rid: str, ev: Event) -> None:
        (self.metrics.requests if ev.is_request else self.metrics.responses).inc()
        if self.pairer.add(rid, ev) and self._wake is not None:
            self._wake.set()

    def refuse(self, status: int, reason: str, message: str, event: bool = True) -> Reply:
        if event:
            self.metrics.invalid.inc()
        self.metrics.rejected.labels(reason).inc()
        return error_reply(status, message)

    # -- labels ---------------------------------------------------------------------------
    async def post_labels(self, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Reply:
        from datetime import timedelta

        if denied := self.auth.check(scan_headers(headers)[1], binary_event=False):
            return self.refuse(denied, "unauthorized", AUTH_MESSAGES[denied], event=False)
        try:
            doc = orjson.loads(body)
            if (
                not isinstance(doc, dict)
                or not isinstance(doc.get("model"), str)
                or not isinstance(doc.get("labels"), list)
            ):
                raise DataError('expected {"model": str, "labels": [...]}')
            model = doc["model"]
            if not (await self.admission.admit([(model, 0)]))[(model, 0)]:
                msg = f"model {model!r} is not registered"
                return self.refuse(422, "unregistered", msg, event=False)
            skew = timedelta(seconds=self.cfg.max_label_skew_s)
            keys = await asyncio.to_thread(
                write_labels, self.store, model, doc["labels"], max_skew=skew
            )
        except (orjson.JSONDecodeError, DataError) as e:
            return self.refuse(400, "malformed", str(e), event=False)
        except StoreError as e:
            self.metrics.flush_errors.inc()
            return error_reply(503, f"store unavailable, retry: {e}")
        return 200, orjson.dumps({"written": len(doc["labels"]), "files": len(keys)})

    # -- flushing -------------------------------------------------------------------------
    async def start(self) -> None:
        """Replay what a previous run left in the write-ahead log, then start flushing."""
        replayed = 0
        for seg, (rid, ev) in self.wal.replay():
            ev.seg = seg
            self.pairer.add(rid, ev)
            replayed += 1
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._flush_loop())
        if replayed:
            log.info("replayed %d events from the write-ahead log in %s", replayed, self.data_dir)
        if self.auth.token is None:
            log.warning(
                "no collector token configured: anyone who can reach this port may post "
                "events and labels (set DRIFTLOOP_COLLECTOR_TOKEN_FILE outside local use)"
            )
        log.info("collector writing to %s (write-ahead log in %s)", self.store.uri, self.data_dir)

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

    async def flush(self, final: bool = False) -> Written:
        """Write every paired row and spilled half now (off the loop thread). What a
        failed write held stays in the write-ahead log: the next start replays it."""
        pairs, halves = self.pairer.take()
        self.writing_bytes = sum(r.size + s.size for _, r, s in pairs)
        self.writing_bytes += sum(ev.size for _, ev in halves)
        self._last_flush = time.monotonic()
        work = self.writer.close if final else self.writer.write
        try:
            done = await asyncio.to_thread(work, pairs, halves)
        except Exception:  # a bug, not bad input: log it loudly and keep serving
            log.exception("flush of %d pairs failed; they stay in the write-ahead log", len(pairs))
            self.metrics.flush_errors.inc()
            return Written()
        finally:
            self.writing_bytes = 0
        for seg in done.segments:
            self.wal.release(seg)
        return done

    async def stop(self) -> None:
        """Graceful stop: every paired row and every unpaired half goes to the store."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        unpaired = self.pairer.drain_unpaired()
        done = await self.flush(final=True)
        kept = self.wal.unreleased()
        self.wal.close()
        log.info(
            "collector stopped: %d rows and %d unpaired halves written; %d events kept in "
            "the write-ahead log for the next start",
            done.rows,
            unpaired,
            kept,
        )
        if kept:
            log.error("the store stayed unreachable: %d events wait in %s", kept, self.data_dir)

    def metrics_page(self) -> bytes:
        from prometheus_client import generate_latest

        self._gauges()
        return generate_latest(self.metrics.registry)

    def _gauges(self) -> None:
        self.pairer.expire(time.time())
        m = self.metrics
        m.memory.labels("pending").set(self.pairer.pending_bytes)
        m.memory.labels("buffered").set(
            self.pairer.ready_bytes
            + self.pairer.spill_bytes
            + self.writing_bytes
            + self.writer.backlog_bytes
        )
        m.memory.labels("inflight").set(self.inflight_bytes)
        m.wal_bytes.set(self.wal.disk_bytes)
        m.wal_syncs.set(self.wal.syncs)
        m.wal_unreleased.set(self.wal.unreleased())


def _named(rejected: list[Rejected]) -> list[tuple[int, str | None, int, str]]:
    return sorted((i, rid, status, msg) for i, status, msg, rid in rejected)


def _unregistered(ev: Event) -> str:
    what = f"model {ev.model!r}" + (f" version {ev.version}" if ev.version else "")
    return f"{what} has no committed version in the registry: not logged"


def default_data_dir(store_uri: str, port: int) -> Path:
    """Where the write-ahead log goes without ``--data-dir``: one directory per store and
    port under the temp dir, so a restarted local collector replays its own log."""
    digest = hashlib.sha256(store_uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "driftloop-collector" / f"{digest}-{port}"


def serve(
    settings: Settings,
    host: str,
    port: int,
    cfg: CollectorConfig | None = None,
    data_dir: Path | None = None,
    open_events: bool = False,
) -> None:
    """Run the collector until SIGTERM/SIGINT, then flush and return."""
    import uvicorn

    _return_freed_memory()
    store = open_store(settings)
    data_dir = data_dir or default_data_dir(store.uri, port)
    app = Collector(store, cfg, data_dir, settings.collector_token, open_events)
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
        # Per-request work nobody reads: the collector logs no client address and its
        # callers need no Server or Date header (~5 % of the loop's time per event).
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


def _return_freed_memory() -> None:
    """Let the process's RSS follow the memory bounds: by default pyarrow's jemalloc and
    glibc's malloc keep freed large blocks for reuse, and a few 8 MB bodies passing
    through leave the RSS at its peak for good (354 MB after 30, measured; 164 with this).
    glibc: a fixed mmap threshold, so every block over 128 KiB is returned when freed."""
    import ctypes

    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default %(default)s)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default %(default)s: this machine only; 0.0.0.0 in a pod)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="write-ahead log directory, replayed on start: the pod's emptyDir (default: "
        "a directory per store and port under the temp dir)",
    )
    p.add_argument(
        "--token-file",
        help="file holding the bearer token event and label posts must send (default: "
        "the collector_token setting, $DRIFTLOOP_COLLECTOR_TOKEN[_FILE]; none: open)",
    )
    p.add_argument(
        "--open-events",
        action="store_true",
        help="admit binary-mode events without a token (KServe's own logger sends none); "
        "batched events and labels still need it",
    )
    CollectorConfig.add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.token_file:
        try:
            token = read_token(args.token_file)
        except ValueError as e:
            from driftloop.errors import ConfigError

            raise ConfigError(str(e)) from None
        settings = settings.model_copy(update={"collector_token": token})
    cfg = CollectorConfig.from_args(args)
    serve(settings, args.host, args.port, cfg, args.data_dir, args.open_events)
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
