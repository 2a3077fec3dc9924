"""The collector's memory: pairing halves by ce-id, and turning pairs into Parquet files.

Two halves with two owners, so no locks are needed:

- ``Pairer`` lives on the event loop thread. Every event goes through ``add`` in a few
  microseconds; paired requests wait in ``ready`` until a flush takes them.
- ``BatchWriter`` lives in the flush thread (one flush at a time). It decodes pairs into
  rows, groups them by (model, version, endpoint, date), encodes Parquet and writes it.
  When the store is down it keeps the encoded files (bounded) and retries on the next flush.

Every bound that drops data counts what it dropped in ``Metrics``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge

from driftloop.errors import IntegrityError, NotFound, StoreError
from driftloop.formats import VersionFiles, log_key, parse_schema
from driftloop.payloads import RESERVED, feature_column, log_schema, to_parquet
from driftloop.registry import Registry, VersionRef
from driftloop.store import Store
from monitoring.decode import Event, decode_pair, model_and_version

log = logging.getLogger("driftloop.collector")
Pair = tuple[str, Event, Event]  # (request id, request, response)


@dataclass(frozen=True)
class CollectorConfig:
    # ~5k rows per file: one second of traffic at the target rate; big enough that the
    # drift job reads few files, small enough to encode in tens of milliseconds.
    batch_rows: int = 5_000
    # Drift windows are hours long; 5 s bounds what a crash (not a clean stop) can lose.
    max_age_s: float = 5.0
    # ~40 s of traffic at 5k rows/s; past it the oldest paired rows are dropped (counted).
    max_buffered_rows: int = 200_000
    # KServe logs no response for a non-200 answer, so some requests never pair.
    max_unpaired: int = 50_000
    unpaired_ttl_s: float = 60.0  # a response follows its request within the model latency
    # Encoded Parquet kept while the store is down: ~25 bytes/row compressed, so ~25 MB.
    max_retry_rows: int = 1_000_000
    # Kubernetes waits 30 s after SIGTERM by default; leave room for the final flush.
    shutdown_retry_s: float = 15.0
    tick_s: float = 0.25  # how often the flusher checks ages and TTLs
    schema_ttl_s: float = 60.0  # re-read a missing schema.json after this long


class Metrics:
    """Prometheus counters in a registry of their own (several apps per test process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        events = Counter("driftloop_collector_events", "CloudEvents received", ["type"], registry=r)
        self.requests, self.responses = events.labels("request"), events.labels("response")
        self.invalid = events.labels("invalid")
        self.rows_written = Counter(
            "driftloop_collector_rows_written", "paired instances written to the store", registry=r
        )
        self.unpaired = Counter(
            "driftloop_collector_unpaired_events",
            "halves that never met their pair (TTL, cap or shutdown)",
            registry=r,
        )
        self.dropped = Counter(
            "driftloop_collector_dropped",
            "events or rows dropped, by reason",
            ["reason"],
            registry=r,
        )
        self.flush_errors = Counter(
            "driftloop_collector_flush_errors",
            "failed store writes (the batch is kept and retried)",
            registry=r,
        )
        self.buffered = Gauge(
            "driftloop_collector_buffered_rows", "paired rows in memory", registry=r
        )
        self.pending = Gauge(
            "driftloop_collector_pending_events", "halves waiting for a pair", registry=r
        )


class Pairer:
    """Pairs request and response halves by ce-id; event-loop thread only."""

    def __init__(self, cfg: CollectorConfig, metrics: Metrics) -> None:
        self.cfg, self.m = cfg, metrics
        self.pending: OrderedDict[str, Event] = OrderedDict()  # arrival order: oldest first
        self.ready: deque[Pair] = deque()
        self.ready_rows = 0
        self.ready_since = 0.0  # monotonic time the oldest ready pair arrived

    def add(self, rid: str, ev: Event) -> bool:
        """Buffer one half; True when a size-triggered flush is due."""
        other = self.pending.pop(rid, None)
        if other is None or other.is_request == ev.is_request:
            if other is not None:  # a retried send of the same half: keep the newer one
                self.m.dropped.labels("duplicate").inc()
            self.pending[rid] = ev
            if len(self.pending) > self.cfg.max_unpaired:
                self.pending.popitem(last=False)
                self.m.unpaired.inc()
            return False
        req, resp = (ev, other) if ev.is_request else (other, ev)
        if not self.ready:
            self.ready_since = time.monotonic()
        self.ready.append((rid, req, resp))
        self.ready_rows += max(req.rows, 1)
        while self.ready_rows > self.cfg.max_buffered_rows:  # the store cannot keep up
            _, old, _ = self.ready.popleft()
            self.ready_rows -= max(old.rows, 1)
            self.m.dropped.labels("overflow").inc(max(old.rows, 1))
        return self.ready_rows >= self.cfg.batch_rows

    def expire(self, now: float) -> None:
        """Count and forget halves older than the TTL (``now`` is time.time())."""
        cutoff = now - self.cfg.unpaired_ttl_s
        while self.pending and next(iter(self.pending.values())).received < cutoff:
            self.pending.popitem(last=False)
            self.m.unpaired.inc()
        self.m.pending.set(len(self.pending))
        self.m.buffered.set(self.ready_rows)

    def due(self) -> bool:
        if not self.ready:
            return False
        old = time.monotonic() - self.ready_since >= self.cfg.max_age_s
        return old or self.ready_rows >= self.cfg.batch_rows

    def take(self) -> list[Pair]:
        batch, self.ready, self.ready_rows = list(self.ready), deque(), 0
        return batch

    def drain_unpaired(self) -> int:
        n = len(self.pending)
        self.pending.clear()
        self.m.unpaired.inc(n)
        return n


class BatchWriter:
    """Decodes pairs and writes one Parquet file per partition; flush thread only."""

    def __init__(self, store: Store, cfg: CollectorConfig, metrics: Metrics) -> None:
        self.store, self.cfg, self.m = store, cfg, metrics
        self.registry = Registry(store)
        self._schemas: dict[tuple[str, int], tuple[dict[str, str] | None, float]] = {}
        self.carry: list[Pair] = []  # pairs whose schema could not be read (store down)
        self.retry: deque[tuple[str, bytes, int]] = deque()  # (key, parquet, rows)

    def backlog_rows(self) -> int:
        return sum(n for _, _, n in self.retry) + len(self.carry)

    def kinds(self, model: str, version: int) -> dict[str, str] | None:
        """Feature → kind in schema order from the version's schema.json (None: unknown)."""
        hit = self._schemas.get((model, version))
        if hit and (hit[0] is not None or time.monotonic() - hit[1] < self.cfg.schema_ttl_s):
            return hit[0]
        ref = VersionRef(model, version)
        try:
            doc = self.registry.read_file(ref, VersionFiles.SCHEMA)
            kinds: dict[str, str] | None = parse_schema(doc, f"{ref}/{VersionFiles.SCHEMA}").kinds
        except (NotFound, IntegrityError) as e:
            log.warning("no usable schema.json for %s v%s (%s); inferring kinds", model, version, e)
            kinds = None
        self._schemas[(model, version)] = (kinds, time.monotonic())
        return kinds

    def write(self, pairs: list[Pair]) -> int:
        """Retry the backlog, then write ``pairs``; returns rows written now."""
        written = self._retry()
        groups: dict[tuple, list[dict]] = {}
        kinds_of: dict[tuple, dict[str, str] | None] = {}
        carry, self.carry = self.carry + pairs, []
        for rid, req, resp in carry:
            try:
                model, version = model_and_version(req, resp)
                kinds = self.kinds(model, version)
                (model, version, endpoint), rows = decode_pair(rid, req, resp, kinds)
            except StoreError:  # S3 down while reading the schema: keep the pair for later
                self._keep(rid, req, resp)
                continue
            except Exception as e:  # untrusted payloads: count and log, never crash
                self.m.dropped.labels("undecodable").inc()
                log.warning("dropped request %s: %s", rid, e)
                continue
            kinds_of[(model, version)] = kinds
            for r in rows:
                groups.setdefault((model, version, endpoint, r["event_time"].date()), []).append(r)
        for (model, version, endpoint, day), rows in groups.items():
            table = _table(rows, kinds_of[(model, version)])
            key = log_key(model, version, endpoint, day)
            written += self._put(key, to_parquet(table), len(rows))
        return written

    def _keep(self, rid: str, req: Event, resp: Event) -> None:
        self.carry.append((rid, req, resp))
        if len(self.carry) > self.cfg.max_buffered_rows:
            self.carry.pop(0)
            self.m.dropped.labels("store_unavailable").inc()

    def _put(self, key: str, data: bytes, rows: int) -> int:
        try:
            self.store.put(key, data)
        except StoreError as e:
            self.m.flush_errors.inc()
            log.error("flush failed, keeping %d rows for retry: %s", rows, e)
            self.retry.append((key, data, rows))
            while sum(n for _, _, n in self.retry) > self.cfg.max_retry_rows:
                self.m.dropped.labels("store_unavailable").inc(self.retry.popleft()[2])
            return 0
        self.m.rows_written.inc(rows)
        return rows

    def _retry(self) -> int:
        written = 0
        while self.retry:
            key, data, rows = self.retry[0]
            try:
                self.store.put(key, data)
            except StoreError as e:  # still down: try again next flush
                self.m.flush_errors.inc()
                log.error("retry of %s failed: %s", key, e)
                break
            self.retry.popleft()
            self.m.rows_written.inc(rows)
            written += rows
        return written

    def close(self, pairs: list[Pair]) -> int:
        """Final flush: write everything, retrying until ``shutdown_retry_s``; returns rows lost."""
        self.write(pairs)
        deadline = time.monotonic() + self.cfg.shutdown_retry_s
        while (self.retry or self.carry) and time.monotonic() < deadline:
            time.sleep(1.0)
            self.write([])
        lost = self.backlog_rows()
        if lost:
            self.m.dropped.labels("store_unavailable").inc(lost)
            log.error("store unreachable at shutdown: %d rows lost", lost)
        return lost


def _table(rows: list[dict], kinds: dict[str, str] | None) -> pa.Table:
    """Rows → an Arrow table; feature kinds from the schema, else inferred from the values."""
    known = {feature_column(n): k for n, k in (kinds or {}).items()}
    cols: dict[str, str] = {}
    for r in rows:
        for c in r:
            if c not in RESERVED and c not in cols:
                cols[c] = known.get(c, "")
    for c, k in cols.items():
        if k:
            continue
        vals = [r.get(c) for r in rows]
        numeric = all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals
        )
        cols[c] = "numeric" if numeric else "categorical"
        for r in rows:
            v = r.get(c)
            if v is not None:
                r[c] = float(v) if numeric else str(v)
    return pa.Table.from_pylist(rows, schema=log_schema(cols))
