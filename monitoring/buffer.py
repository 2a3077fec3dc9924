"""The collector's memory: pairing halves by ce-id (and endpoint), and writing pairs and
halves as Parquet.

Two owners, so no locks are needed:

- ``Pairer`` lives on the event loop thread. Every accepted event goes through ``add`` in
  a few microseconds; paired requests wait in ``ready`` until a flush takes them, halves
  that will not pair here (TTL, memory bound, shutdown) wait in ``spill``.
- ``BatchWriter`` lives in the flush thread (one flush at a time). It decodes pairs into
  rows, groups them by (model, version, endpoint, date) and writes one Parquet file per
  group; it writes spilled halves as half-records (``formats.HALF_FIELDS``) that
  ``read_logs`` pairs later. When the store is down it keeps the encoded files and
  retries them on the next flush.

Every event is in the write-ahead log before it gets here, and each write reports the
log segments of the events it stored, so the collector can delete what is in the store.
Every bound is in bytes (``Event.size``: the raw body plus a fixed overhead):

- ``max_pending_bytes``: unpaired halves. Past it, the oldest are spilled (written unpaired).
- ``max_buffered_bytes``: pairs and halves waiting to be written, and Parquet kept while
  the store is down. Past it, the collector answers 503 to new events (the sender
  retries); nothing it accepted is dropped.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge

from driftloop.decode import Event, decode_pair, event_time
from driftloop.errors import DataError, StoreError
from driftloop.formats import half_key, log_key
from driftloop.payloads import HALF_SCHEMA, rows_table, to_parquet
from driftloop.store import Store

log = logging.getLogger("driftloop.collector")
Pair = tuple[str, Event, Event]  # (request id, request, response)
Half = tuple[str, Event]
MiB = 1 << 20


@dataclass(frozen=True)
class CollectorConfig:
    # ~5k rows per file: one second of traffic at the target rate; big enough that the
    # drift job reads few files, small enough to encode in tens of milliseconds.
    batch_rows: int = 5_000
    # ...or 4 MiB of bodies, whichever comes first: decoding a flush costs ~10x its
    # bodies in Python objects, so this bounds the flush thread's memory too.
    batch_bytes: int = 4 * MiB
    # Drift windows are hours long; rows reach the store within 5 s of arriving.
    max_age_s: float = 5.0
    # A response follows its request within the model's latency; KServe's logger posts
    # them separately, so with N replicas most halves of a pair land apart: they wait this
    # long, then are stored unpaired and paired when the logs are read.
    unpaired_ttl_s: float = 10.0
    # The memory bounds, sized for the manifests' 512Mi limit: ~140 MiB at rest (Python,
    # pyarrow, uvloop) + 32 unpaired + 64 buffered + 48 bodies being received + the
    # transient cost of parsing one 16 MiB body and decoding one flush (~130) ≈ 420 MiB.
    max_pending_bytes: int = 32 * MiB
    max_buffered_bytes: int = 64 * MiB
    max_inflight_bytes: int = 48 * MiB
    # The write-ahead log on disk: the pod's emptyDir is 1Gi; past this, 503 (the store
    # has been down for a while and the senders' own buffers take over).
    max_wal_bytes: int = 768 * MiB
    # Kubernetes waits 30 s after SIGTERM by default; leave room for the final flush.
    # What is not written by then stays in the write-ahead log for the next start.
    shutdown_retry_s: float = 15.0
    tick_s: float = 0.25  # how often the flusher checks ages and TTLs
    # How far a label's time may be ahead of its receipt (formats.MAX_LABEL_SKEW).
    max_label_skew_s: float = 300.0

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """The collector's command-line flags for these settings (``from_args``)."""
        d = CollectorConfig()
        p.add_argument("--batch-rows", type=int, default=d.batch_rows, help="rows per Parquet file")
        p.add_argument(
            "--max-age",
            type=float,
            default=d.max_age_s,
            help="seconds before a partial batch is flushed (default %(default)s)",
        )
        p.add_argument(
            "--unpaired-ttl",
            type=float,
            default=d.unpaired_ttl_s,
            help="seconds a half waits for its other half before it is stored unpaired "
            "(default %(default)s)",
        )
        p.add_argument(
            "--max-pending-mb",
            type=float,
            default=d.max_pending_bytes / MiB,
            help="MiB of unpaired halves held; past it the oldest are stored unpaired "
            "(default %(default)s)",
        )
        p.add_argument(
            "--max-buffered-mb",
            type=float,
            default=d.max_buffered_bytes / MiB,
            help="MiB waiting for the store; past it new events get 503 (default %(default)s)",
        )
        p.add_argument(
            "--max-label-skew",
            type=float,
            default=d.max_label_skew_s,
            help="seconds a label's time may be ahead of its receipt (default %(default)s)",
        )
        p.add_argument(
            "--shutdown-retry",
            type=float,
            default=d.shutdown_retry_s,
            help="seconds to retry an unreachable store on SIGTERM; the rest stays in the "
            "write-ahead log (default %(default)s)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CollectorConfig:
        return cls(
            batch_rows=args.batch_rows,
            max_age_s=args.max_age,
            unpaired_ttl_s=args.unpaired_ttl,
            max_pending_bytes=int(args.max_pending_mb * MiB),
            max_buffered_bytes=int(args.max_buffered_mb * MiB),
            max_label_skew_s=args.max_label_skew,
            shutdown_retry_s=args.shutdown_retry,
        )


class Metrics:
    """Prometheus counters in a registry of their own (several apps per test process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        events = Counter("driftloop_collector_events", "CloudEvents received", ["type"], registry=r)
        self.requests, self.responses = events.labels("request"), events.labels("response")
        self.invalid = events.labels("invalid")
        self.rejected = Counter(
            "driftloop_collector_rejected",
            "events and label posts refused (4xx/503; nothing of them was kept), by reason",
            ["reason"],
            registry=r,
        )
        self.rows_written = Counter(
            "driftloop_collector_rows_written", "paired instances written to the store", registry=r
        )
        self.unpaired = Counter(
            "driftloop_collector_unpaired_events",
            "halves written to the store unpaired (TTL, memory bound or shutdown)",
            registry=r,
        )
        self.duplicates = Counter(
            "driftloop_collector_duplicate_events",
            "a half received again before its pair (a retry): the copy is dropped",
            registry=r,
        )
        self.dropped = Counter(
            "driftloop_collector_dropped",
            "accepted pairs whose halves do not decode together (e.g. 2 instances, 3 predictions)",
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
        self.memory = Gauge(
            "driftloop_collector_memory_bytes",
            "bytes held, by bound: pending, buffered, inflight",
            ["bound"],
            registry=r,
        )
        self.wal_bytes = Gauge(
            "driftloop_collector_wal_bytes", "write-ahead log on disk", registry=r
        )
        self.wal_syncs = Gauge(
            "driftloop_collector_wal_syncs",
            "group commits (one write + fdatasync each) since start",
            registry=r,
        )
        self.wal_unreleased = Gauge(
            "driftloop_collector_wal_unreleased_events",
            "logged events not yet in the store",
            registry=r,
        )


class Pairer:
    """Pairs request and response halves by (ce-id, ce-endpoint): a shadow version's pair
    carries the served model's request id; event-loop thread only. ``release`` is
    called with the log segment of an event dropped as a duplicate."""

    def __init__(self, cfg: CollectorConfig, metrics: Metrics, release: Callable[[int], None]):
        self.cfg, self.m, self.release = cfg, metrics, release
        # (request id, endpoint) -> half, in arrival order: oldest first
        self.pending: OrderedDict[tuple[str, str], Event] = OrderedDict()
        self.pending_bytes = 0
        self.ready: deque[Pair] = deque()
        self.ready_rows = self.ready_bytes = 0
        self.ready_since = 0.0  # monotonic time the oldest ready pair arrived
        self.spill: list[Half] = []
        self.spill_bytes = 0
        self.spill_since = 0.0

    def add(self, rid: str, ev: Event) -> bool:
        """Buffer one half; True when a size-triggered flush is due."""
        key = (rid, ev.endpoint)
        other = self.pending.pop(key, None)
        if other is not None:
            self.pending_bytes -= other.size
        if other is None or other.is_request == ev.is_request:
            if other is not None:  # a resend of the same half: one copy is enough
                self.m.duplicates.inc()
                self.release(other.seg)
            self.pending[key] = ev
            self.pending_bytes += ev.size
            while self.pending_bytes > self.cfg.max_pending_bytes and self.pending:
                self._spill_oldest()
            return self.due_by_size()
        req, resp = (ev, other) if ev.is_request else (other, ev)
        if not self.ready:
            self.ready_since = time.monotonic()
        self.ready.append((rid, req, resp))
        self.ready_rows += max(req.rows, 1)
        self.ready_bytes += req.size + resp.size
        return self.due_by_size()

    def _spill_oldest(self) -> None:
        (rid, _), ev = self.pending.popitem(last=False)
        self._spill(rid, ev)

    def _spill(self, rid: str, ev: Event) -> None:
        self.pending_bytes -= ev.size
        if not self.spill:
            self.spill_since = time.monotonic()
        self.spill.append((rid, ev))
        self.spill_bytes += ev.size
        self.m.unpaired.inc()

    def expire(self, now: float) -> None:
        """Spill halves older than the TTL (``now`` is time.time())."""
        cutoff = now - self.cfg.unpaired_ttl_s
        while self.pending and next(iter(self.pending.values())).received < cutoff:
            self._spill_oldest()
        self.m.pending.set(len(self.pending))
        self.m.buffered.set(self.ready_rows)

    def due_by_size(self) -> bool:
        return (
            self.ready_rows >= self.cfg.batch_rows
            or self.ready_bytes + self.spill_bytes >= self.cfg.batch_bytes
        )

    def due(self) -> bool:
        now, age = time.monotonic(), self.cfg.max_age_s
        old = (self.ready and now - self.ready_since >= age) or (
            self.spill and now - self.spill_since >= age
        )
        return bool(old) or self.due_by_size()

    def take(self) -> tuple[list[Pair], list[Half]]:
        pairs, self.ready, self.ready_rows, self.ready_bytes = list(self.ready), deque(), 0, 0
        halves, self.spill, self.spill_bytes = self.spill, [], 0
        return pairs, halves

    def drain_unpaired(self) -> int:
        """Spill every pending half (shutdown); returns how many."""
        n = len(self.pending)
        while self.pending:
            self._spill_oldest()
        return n


@dataclass
class Written:
    """What one ``BatchWriter.write`` call stored."""

    rows: int = 0
    halves: int = 0
    segments: list[int] = field(default_factory=list)  # one per event now in the store


@dataclass
class _File:
    key: str
    data: bytes
    rows: int  # log rows in it (0 for half-records)
    halves: int
    segments: list[int]


class BatchWriter:
    """Decodes pairs, writes Parquet per partition and half-records; flush thread only.
    ``kinds(model, version)`` gives a version's feature kinds (StoreError: try later)."""

    def __init__(
        self,
        store: Store,
        cfg: CollectorConfig,
        metrics: Metrics,
        kinds: Callable[[str, int], dict[str, str] | None],
    ) -> None:
        self.store, self.cfg, self.m, self.kinds = store, cfg, metrics, kinds
        self.carry: list[Pair] = []  # pairs whose schema could not be read (store down)
        self.retry: deque[_File] = deque()
        self.backlog_bytes = 0  # of carry and retry: read by the event loop for its bound

    def backlog_rows(self) -> int:
        return sum(f.rows + f.halves for f in self.retry) + len(self.carry)

    def write(self, pairs: list[Pair], halves: list[Half]) -> Written:
        """Retry the backlog, then write ``pairs`` and ``halves``."""
        out = Written()
        self._retry(out)
        carry, self.carry = self.carry + pairs, []
        chunk: list[Pair] = []
        rows = size = 0
        for pair in carry:
            chunk.append(pair)
            rows, size = rows + max(pair[1].rows, 1), size + pair[1].size + pair[2].size
            if rows >= self.cfg.batch_rows or size >= self.cfg.batch_bytes:
                self._write_pairs(chunk, out)
                chunk, rows, size = [], 0, 0
        if chunk:
            self._write_pairs(chunk, out)
        if halves:
            self._write_halves(halves, out)
        self.backlog_bytes = sum(len(f.data) for f in self.retry) + sum(
            r.size + s.size for _, r, s in self.carry
        )
        return out

    def _write_pairs(self, pairs: list[Pair], out: Written) -> None:
        groups: dict[tuple, list[tuple[Pair, list[dict]]]] = {}
        kinds_of: dict[tuple[str, int], dict[str, str] | None] = {}
        for pair in pairs:
            rid, req, resp = pair
            try:
                kinds = kinds_of[(resp.model, resp.version)] = self.kinds(resp.model, resp.version)
                (model, version, endpoint), rows = decode_pair(rid, req, resp, kinds)
            except StoreError:  # S3 down while reading the schema: keep the pair for later
                self.carry.append(pair)
                continue
            except (DataError, ValueError) as e:  # halves that do not fit each other
                self.m.dropped.labels("undecodable").inc()
                log.warning("dropped request %s: %s", rid, e)
                out.segments += [req.seg, resp.seg]
                continue
            day = rows[0]["event_time"].date() if rows else datetime.now(UTC).date()
            groups.setdefault((model, version, endpoint, day), []).append((pair, rows))
        for (model, version, endpoint, day), members in groups.items():
            table = self._table(members, kinds_of[(model, version)], out)
            if table is None:
                continue
            segs = [s for (_, req, resp), _ in members for s in (req.seg, resp.seg)]
            key = log_key(model, version, endpoint, day)
            self._put(_File(key, to_parquet(table), len(table), 0, segs), out)

    def _table(
        self, members: list[tuple[Pair, list[dict]]], kinds: dict[str, str] | None, out: Written
    ) -> pa.Table | None:
        """The group's table; should one pair's values not fit (a bug, not bad input:
        values are checked on arrival), that pair alone is dropped, never the group."""
        try:
            return rows_table([r for _, rows in members for r in rows], kinds)
        except (pa.ArrowException, ValueError, TypeError):
            pass
        good = []
        for (rid, req, resp), rows in members:
            try:
                rows_table(rows, kinds)
                good.append(((rid, req, resp), rows))
            except (pa.ArrowException, ValueError, TypeError) as e:
                self.m.dropped.labels("undecodable").inc()
                log.warning("dropped request %s: %s", rid, e)
                out.segments += [req.seg, resp.seg]
        members[:] = good
        return rows_table([r for _, rows in good for r in rows], kinds) if good else None

    def _write_halves(self, halves: list[Half], out: Written) -> None:
        groups: dict[tuple, list[tuple[dict, int]]] = {}
        sizes: dict[tuple, int] = {}
        for rid, ev in halves:
            received = datetime.fromtimestamp(ev.received, UTC).replace(tzinfo=None)
            when = event_time(ev) if ev.is_request else None
            kind = "request" if ev.is_request else "response"
            row = {
                "request_id": rid,
                "kind": kind,
                "received_at": received,
                "event_time": when,
                "ce_time": ev.ce_time,
                "inference_service": ev.service,
                "namespace": ev.namespace,
                "endpoint": ev.endpoint,
                "model": ev.model,
                "version": ev.version,
                "rows": ev.rows,
                "body": ev.raw,
            }
            group = (ev.service or ev.model, kind, (when or received).date())
            if sizes.get(group, 0) + ev.size > self.cfg.batch_bytes and groups.get(group):
                self._put_halves(*group, groups.pop(group), out)  # files of ~batch_bytes
                sizes[group] = 0
            groups.setdefault(group, []).append((row, ev.seg))
            sizes[group] = sizes.get(group, 0) + ev.size
        for (service, kind, day), members in groups.items():
            self._put_halves(service, kind, day, members, out)

    def _put_halves(
        self, service: str, kind: str, day: date, members: list[tuple[dict, int]], out: Written
    ) -> None:
        table = pa.Table.from_pylist([r for r, _ in members], schema=HALF_SCHEMA)
        segs = [s for _, s in members]
        self._put(_File(half_key(service, kind, day), to_parquet(table), 0, len(segs), segs), out)

    def _put(self, f: _File, out: Written) -> None:
        try:
            self.store.put(f.key, f.data)
        except StoreError as e:
            self.m.flush_errors.inc()
            log.error("flush failed, keeping %d rows for retry: %s", f.rows + f.halves, e)
            self.retry.append(f)
            return
        self._stored(f, out)

    def _stored(self, f: _File, out: Written) -> None:
        self.m.rows_written.inc(f.rows)
        out.rows += f.rows
        out.halves += f.halves
        out.segments += f.segments

    def _retry(self, out: Written) -> None:
        while self.retry:
            f = self.retry[0]
            try:
                self.store.put(f.key, f.data)
            except StoreError as e:  # still down: try again next flush
                self.m.flush_errors.inc()
                log.error("retry of %s failed: %s", f.key, e)
                return
            self.retry.popleft()
            self._stored(f, out)

    def close(self, pairs: list[Pair], halves: list[Half]) -> Written:
        """Final flush: write everything, retrying until ``shutdown_retry_s``. What is not
        written stays in the write-ahead log (its segments are not released)."""
        out = self.write(pairs, halves)
        deadline = time.monotonic() + self.cfg.shutdown_retry_s
        while (self.retry or self.carry) and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            more = self.write([], [])
            out.rows, out.halves = out.rows + more.rows, out.halves + more.halves
            out.segments += more.segments
        return out
