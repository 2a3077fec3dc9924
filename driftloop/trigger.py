"""Retraining triggers that start exactly one pipeline run, whatever the concurrency.

Store layout (``monitoring/<model>/``)::

    triggers/<trigger-id>.json     the record: reason, evidence, window, status, run id
    leases/<n>.json                lease generation n (exclusive create)
    leases/<n>.done                released

Exactly once, by construction:

1. A trigger id is derived from the model and the drift window, so every job that looks
   at the same window names the same trigger; its record is created exclusively.
2. Starting a run needs the lease. A job reads the latest generation n; if it is still
   held (not done, not expired) a run is in flight and nothing starts. Otherwise it
   creates generation n + 1 exclusively: of many concurrent jobs exactly one succeeds.
3. The run's name carries the trigger id; before creating a run the KFP backend looks for
   a run of that name, so a retried trigger never starts a second run.
4. A failed start (KFP unreachable) marks the trigger ``failed`` and releases the lease;
   the next window retries the same trigger id.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

from driftloop.errors import DriftloopError
from driftloop.formats import (
    Lease,
    TriggerRecord,
    TriggerStatus,
    lease_key,
    leases_prefix,
    monitoring_prefix,
    trigger_key,
    triggers_prefix,
)
from driftloop.store import Store

LEASE_TTL = timedelta(hours=6)  # longer than any training run; a crashed holder expires


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
        """The latest trigger whose run failed to start, if it is the latest trigger.
        ``triggers``: ``all()`` when the caller has just read it."""
        triggers = self.all() if triggers is None else triggers
        return triggers[-1] if triggers and triggers[-1].status == "failed" else None

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
        """The lease if a run is in flight (held, not released, not expired)."""
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

    def release(self, generation: int) -> None:
        self.store.put(lease_key(self.model, generation, done=True), _now().isoformat().encode())

    def release_current(self) -> None:
        gens = self._generations()
        if gens:
            self.release(gens[-1])


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
    when another job holds the lease (a run is in flight; the trigger waits).

    The lease stays held while a run is in flight (KFP) and is released when the run's
    state is known (``reconcile``) or when starting failed.
    """
    generation = log.acquire(trig.id)
    if generation is None:
        return None
    trig.attempts += 1
    trig.backend = backend.name
    trig.run_name = f"{log.model}-{trig.id}"
    try:
        trig.run_id = backend.start(trig)
        trig.status = "running"
        trig.error = ""
    except DriftloopError as e:
        trig.status, trig.error = "failed", str(e)
        log.save(trig)
        log.release(generation)
        return trig
    log.save(trig)
    reconcile(log, backend)
    return log.get(trig.id)


def reconcile(log: TriggerLog, backend: Backend) -> list[TriggerRecord]:
    """Settle running triggers whose runs have finished, releasing the lease; returns
    every trigger, oldest first, as it now stands."""
    triggers = log.all()
    for trig in triggers:
        if trig.status != "running":
            continue
        state = backend.state(trig.run_id)
        if state != "running":
            trig.status = state
            log.save(trig)
            log.release_current()
    return triggers
