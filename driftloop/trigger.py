"""Retraining triggers that start exactly one pipeline run, whatever the concurrency, and
recover when the job or the run that answers them dies.

Store layout (``monitoring/<model>/``, ``driftloop.formats``)::

    triggers/<trigger-id>.json     TriggerRecord: reason, evidence, window, status, run, outcome
    leases/<n>.json                lease generation n (exclusive create), renewed while held
    leases/<n>.done                released

Exactly once, by construction:

1. A trigger id is derived from the model and the drift window, so every job that looks
   at the same window names the same trigger; its record is created exclusively.
2. Starting a run needs the lease: a job creates generation n + 1 exclusively (of many
   concurrent jobs exactly one succeeds) and, holding it, checks that no other trigger's
   run is in flight, records the attempt, starts the run and records it ``running``. The
   lease only guards that start: a job that blocks on its run (a local or in-process run)
   renews it every ``LEASE_TTL / 4``; a holder that dies stops renewing, and its lease
   lapses after ``LEASE_TTL`` (10 minutes).
3. The run's name carries the trigger id and the attempt; before creating a run the KFP
   backend looks for a run of that name, so resuming an attempt whose starter died never
   starts a second run, while a new attempt after a failed run does start a new one.

Recovery: a trigger whose start failed, whose run failed, or whose starter died (still
``pending`` with no live lease) is retried by the next window under the same id, up to
``MAX_ATTEMPTS``. Runs in flight are read from the records (``running``, settled by
``reconcile`` against the backend), never inferred from the lease. The policy's cooldown
counts from the last trigger whose run completed (``last_completed``), not from one that
never finished. ``reconcile`` also records each settled run's outcome from the registry:
the version it registered and whether that version is in production.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

from driftloop.errors import DriftloopError
from driftloop.formats import (
    Lease,
    TriggerRecord,
    TriggerStatus,
    gate_key,
    lease_key,
    leases_prefix,
    monitoring_prefix,
    trigger_key,
    triggers_prefix,
)
from driftloop.registry import VersionRef
from driftloop.store import Store

# The lease guards one job's start of a run. A holder renews it every LEASE_TTL / 4 while it
# blocks on the run, so 10 minutes bounds how long a dead holder blocks the next trigger
# without ever interrupting a live one.
LEASE_TTL = timedelta(minutes=10)
# A trigger whose start or run keeps failing (bad data, a broken cluster) is retried this
# many times in all, one attempt per drift window, then left failed for a human.
MAX_ATTEMPTS = 3


def _now() -> datetime:
    return datetime.now(UTC)


def trigger_id(model: str, window_end: str) -> str:
    """Deterministic: the same model and window always name the same trigger."""
    stamp = re.sub(r"[^0-9]", "", window_end)[:12]
    digest = hashlib.sha256(f"{model}|{window_end}".encode()).hexdigest()[:8]
    return f"trg-{stamp}-{digest}"


class TriggerLog:
    """Trigger records and the lease of one model, on the store."""

    def __init__(self, store: Store, model: str) -> None:
        self.store, self.model = store, model
        self.prefix = monitoring_prefix(model)

    # -- records --------------------------------------------------------------------------
    def create(self, trig: TriggerRecord) -> bool:
        """Record a new trigger; False if this id exists (another job, or a retry)."""
        trig.created = trig.created or _now().isoformat(timespec="seconds")
        return self.store.create(trigger_key(self.model, trig.id), trig.dump())

    def get(self, tid: str) -> TriggerRecord:
        return self._read(trigger_key(self.model, tid))

    def _read(self, key: str) -> TriggerRecord:
        record: TriggerRecord = TriggerRecord.parse(self.store.get(key), f"{self.store.uri}/{key}")
        return record

    def save(self, trig: TriggerRecord) -> None:
        trig.updated = _now().isoformat(timespec="seconds")
        self.store.put(trigger_key(self.model, trig.id), trig.dump())

    def all(self) -> list[TriggerRecord]:
        keys = [k for k in self.store.list(triggers_prefix(self.model)) if k.endswith(".json")]
        return sorted((self._read(k) for k in keys), key=lambda t: t.created)

    def retryable(self, triggers: list[TriggerRecord] | None = None) -> TriggerRecord | None:
        """The latest trigger, if it needs another attempt: its start or run failed, or its
        starter died (``pending`` after an attempt, with no live lease); at most
        ``MAX_ATTEMPTS`` attempts. ``triggers``: ``all()`` when the caller has just read it."""
        triggers = self.all() if triggers is None else triggers
        if not triggers or triggers[-1].attempts >= MAX_ATTEMPTS:
            return None
        last = triggers[-1]
        if last.status == "failed":
            return last
        if last.status == "pending" and last.attempts > 0 and self.held() is None:
            return last
        return None

    # -- lease ----------------------------------------------------------------------------
    def _generations(self) -> list[int]:
        return sorted(
            {
                int(m.group(1))
                for k in self.store.list(leases_prefix(self.model))
                if (m := re.search(r"/(\d+)\.json$", k))
            }
        )

    def held(self) -> Lease | None:
        """The lease if a job is starting a run now (held, not released, not expired)."""
        gens = self._generations()
        return self._active(gens[-1]) if gens else None

    def _active(self, n: int) -> Lease | None:
        if self.store.exists(lease_key(self.model, n, done=True)):
            return None
        key = lease_key(self.model, n)
        lease: Lease = Lease.parse(self.store.get(key), f"{self.store.uri}/{key}")
        return None if datetime.fromisoformat(lease.expires) < _now() else lease

    def acquire(self, tid: str) -> int | None:
        """Take the lease for trigger ``tid``: its generation, or None if another job
        holds it or won the race for it."""
        # Decide from ONE listing: checking "free" and choosing n from two listings lets
        # a job that saw no lease claim n + 1 right after another job claimed n.
        gens = self._generations()
        if gens and self._active(gens[-1]) is not None:
            return None
        n = (gens or [0])[-1] + 1
        lease = Lease(
            trigger_id=tid, holder=uuid.uuid4().hex, expires=(_now() + LEASE_TTL).isoformat()
        )
        ok = self.store.create(lease_key(self.model, n), lease.dump())
        return n if ok else None

    def renew(self, generation: int) -> None:
        """Push the lease's expiry out by ``LEASE_TTL`` (its holder only)."""
        key = lease_key(self.model, generation)
        lease: Lease = Lease.parse(self.store.get(key), f"{self.store.uri}/{key}")
        lease.expires = (_now() + LEASE_TTL).isoformat()
        self.store.put(key, lease.dump())

    @contextlib.contextmanager
    def heartbeat(self, generation: int) -> Iterator[None]:
        """Renew the lease every ``LEASE_TTL / 4`` while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(LEASE_TTL.total_seconds() / 4):
                with contextlib.suppress(DriftloopError):  # a missed beat is not fatal
                    self.renew(generation)

        thread = threading.Thread(target=beat, name=f"lease-{self.model}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self, generation: int) -> None:
        self.store.put(lease_key(self.model, generation, done=True), _now().isoformat().encode())


# -- what starts a run ---------------------------------------------------------------------
class Backend(Protocol):
    """Starts the retraining run of a trigger. The implementations are deployables
    (``monitoring/backends.py``: a kfp.local run, a KFP run, the steps in-process)."""

    name: str

    def start(self, trig: TriggerRecord) -> str:
        """Start (or find) the run for ``trig``; its run id. Raises DriftloopError."""

    def state(self, run_id: str) -> TriggerStatus:
        """running, succeeded or failed."""


def fire(log: TriggerLog, trig: TriggerRecord, backend: Backend) -> TriggerRecord | None:
    """Start the run for a recorded trigger under the lease: the updated record, or None
    when another job holds the lease or another trigger's run is in flight (the trigger
    waits for a later window)."""
    generation = log.acquire(trig.id)
    if generation is None:
        return None
    try:
        with log.heartbeat(generation):
            # Under the lease: is another trigger's run still in flight?
            current = {t.id: t for t in reconcile(log, backend)}
            if any(t.status == "running" and t.id != trig.id for t in current.values()):
                return None
            trig = current.get(trig.id, trig)
            if trig.status in ("running", "succeeded"):
                return trig  # another job started it between our reads
            if not (trig.status == "pending" and trig.attempts > 0):
                # A new attempt (first, or after a failure) gets a new run name. Resuming a
                # "pending" attempt, whose starter died, keeps its name: the KFP backend
                # then finds the run if it was created, so a crash never starts two.
                trig.attempts += 1
                trig.run_name = f"{log.model}-{trig.id}-{trig.attempts}"
            trig.backend = backend.name
            trig.status, trig.error = "pending", ""
            log.save(trig)  # a crash from here on leaves "pending": retried later
            try:
                trig.run_id = backend.start(trig)
                trig.status = "running"
            except DriftloopError as e:
                trig.status, trig.error = "failed", str(e)
            log.save(trig)
    finally:
        log.release(generation)
    reconcile(log, backend)  # runs that finish inside start() settle now
    return log.get(trig.id)


def reconcile(log: TriggerLog, backend: Backend) -> list[TriggerRecord]:
    """Settle running triggers whose runs have finished, recording their outcome; returns
    every trigger, oldest first, as it now stands."""
    triggers = log.all()
    for trig in triggers:
        if trig.status != "running":
            continue
        state = backend.state(trig.run_id)
        if state != "running":
            trig.status = state
            if state == "failed" and not trig.error:
                trig.error = f"run {trig.run_id} failed"
            trig.outcome = outcome(log.store, trig)
            log.save(trig)
    return triggers


def outcome(store: Store, trig: TriggerRecord) -> str:
    """What the trigger's run did, from the registry and the run's gate record:
    ``promoted vN``, ``restored vN`` (an earlier version won), ``registered vN, not
    promoted``, ``refused: <the gate's reasons>``, or ``failed before the gate`` (no gate
    record). Also links the gate record (``trig.gate``)."""
    from driftloop.gate import gate_records
    from driftloop.registry import Registry

    registry = Registry(store)
    production = registry.alias(trig.model, "production")
    gates = gate_records(store, trig.model, trig.id)
    if gates:
        trig.gate = gate_key(trig.model, gates[-1].created, gates[-1].run_id)
    mine = [
        v
        for v in registry.versions(trig.model)
        if registry.manifest(VersionRef(trig.model, v)).lineage.trigger_id == trig.id
    ]
    if mine:
        if production == mine[-1]:
            return f"promoted v{mine[-1]}"
        return f"registered v{mine[-1]}, not promoted"
    if not gates:
        return "failed before the gate" if trig.status == "failed" else "nothing registered"
    last = gates[-1]
    if last.verdict == "promote":
        return "the gate passed the challenger, but the run registered nothing (it failed)"
    if last.verdict == "restore" and production == last.restore:
        return f"restored v{last.restore}: " + "; ".join(last.reasons)
    return "refused: " + "; ".join(last.reasons)


def last_completed(triggers: list[TriggerRecord]) -> datetime | None:
    """The window end of the last trigger whose run completed: the cooldown's anchor."""
    ends = [datetime.fromisoformat(t.window.end) for t in triggers if t.status == "succeeded"]
    return max(ends, default=None)


def in_flight(log: TriggerLog, triggers: list[TriggerRecord]) -> bool:
    """A run is in flight (a trigger is ``running``) or a job is starting one now."""
    return any(t.status == "running" for t in triggers) or log.held() is not None
