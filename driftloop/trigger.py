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
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from driftloop.errors import DriftloopError
from driftloop.store import Store

Status = Literal["pending", "running", "succeeded", "failed"]
LEASE_TTL = timedelta(hours=6)  # longer than any training run; a crashed holder expires


def _now() -> datetime:
    return datetime.now(UTC)


def trigger_id(model: str, window_end: str) -> str:
    """Deterministic: the same model and window always name the same trigger."""
    stamp = re.sub(r"[^0-9]", "", window_end)[:12]
    digest = hashlib.sha256(f"{model}|{window_end}".encode()).hexdigest()[:8]
    return f"trg-{stamp}-{digest}"


@dataclass
class Trigger:
    id: str
    model: str
    version: int  # the production version whose traffic drifted
    reason: list[str]
    window: dict  # {"start": ..., "end": ...} of the drift window
    evidence: dict  # store keys of the Evidently report and summary
    train_window: dict  # {"start": ..., "end": ...} the retraining run gets
    status: Status = "pending"
    run_id: str = ""
    run_name: str = ""
    backend: str = ""
    attempts: int = 0
    error: str = ""
    created: str = field(default_factory=lambda: _now().isoformat(timespec="seconds"))
    updated: str = ""


class TriggerLog:
    """Trigger records and the lease of one model, on the store."""

    def __init__(self, store: Store, model: str) -> None:
        self.store, self.model = store, model
        self.prefix = f"monitoring/{model}"

    # -- records --------------------------------------------------------------------------
    def _key(self, tid: str) -> str:
        return f"{self.prefix}/triggers/{tid}.json"

    def create(self, trig: Trigger) -> bool:
        """Record a new trigger; False if this id exists (another job, or a retry)."""
        import json

        return self.store.create(self._key(trig.id), json.dumps(asdict(trig), indent=2).encode())

    def get(self, tid: str) -> Trigger:
        return Trigger(**self.store.get_json(self._key(tid)))

    def save(self, trig: Trigger) -> None:
        trig.updated = _now().isoformat(timespec="seconds")
        self.store.put_json(self._key(trig.id), asdict(trig))

    def all(self) -> list[Trigger]:
        keys = [k for k in self.store.list(f"{self.prefix}/triggers") if k.endswith(".json")]
        return sorted((Trigger(**self.store.get_json(k)) for k in keys), key=lambda t: t.created)

    def retryable(self, triggers: list[Trigger] | None = None) -> Trigger | None:
        """The latest trigger whose run failed to start, if it is the latest trigger.
        ``triggers``: ``all()`` when the caller has just read it."""
        triggers = self.all() if triggers is None else triggers
        return triggers[-1] if triggers and triggers[-1].status == "failed" else None

    # -- lease ----------------------------------------------------------------------------
    def _generations(self) -> list[int]:
        return sorted(
            {
                int(m.group(1))
                for k in self.store.list(f"{self.prefix}/leases")
                if (m := re.search(r"/(\d+)\.json$", k))
            }
        )

    def held(self) -> dict | None:
        """The lease if a run is in flight (held, not released, not expired)."""
        gens = self._generations()
        return self._active(gens[-1]) if gens else None

    def _active(self, n: int) -> dict | None:
        if self.store.exists(f"{self.prefix}/leases/{n:08d}.done"):
            return None
        lease = dict(self.store.get_json(f"{self.prefix}/leases/{n:08d}.json"))
        return None if datetime.fromisoformat(lease["expires"]) < _now() else lease

    def acquire(self, tid: str) -> int | None:
        """Take the lease for trigger ``tid``: its generation, or None if another job
        holds it or won the race for it."""
        import json

        # Decide from ONE listing: checking "free" and choosing n from two listings lets
        # a job that saw no lease claim n + 1 right after another job claimed n.
        gens = self._generations()
        if gens and self._active(gens[-1]) is not None:
            return None
        n = (gens or [0])[-1] + 1
        lease = {
            "trigger_id": tid,
            "holder": uuid.uuid4().hex,
            "expires": (_now() + LEASE_TTL).isoformat(),
        }
        ok = self.store.create(f"{self.prefix}/leases/{n:08d}.json", json.dumps(lease).encode())
        return n if ok else None

    def release(self, generation: int) -> None:
        self.store.put(f"{self.prefix}/leases/{generation:08d}.done", _now().isoformat().encode())

    def release_current(self) -> None:
        gens = self._generations()
        if gens:
            self.release(gens[-1])


# -- backends ---------------------------------------------------------------------------------
class Backend(Protocol):
    name: str

    def start(self, trig: Trigger) -> str:
        """Start (or find) the run for ``trig``; its run id. Raises DriftloopError."""

    def state(self, run_id: str) -> Status:
        """running, succeeded or failed."""


@dataclass
class LocalBackend:
    """Runs the training pipeline with kfp.local in a child process and waits for it."""

    spec_path: str
    store_uri: str
    n_trials: int = 4
    margin: float = 0.0
    timeout_s: float = 1800
    name: str = "local"

    def start(self, trig: Trigger) -> str:
        cmd = [
            sys.executable,
            "-m",
            "driftloop.cli",
            "--store",
            self.store_uri,
            "pipeline",
            "run",
            "--local",
            "--spec",
            self.spec_path,
            "--start",
            trig.train_window["start"],
            "--end",
            trig.train_window["end"],
            "--trials",
            str(self.n_trials),
            "--margin",
            str(self.margin),
            "--trigger-id",
            trig.id,
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise DriftloopError(f"local training run for {trig.id} timed out") from e
        run_id = f"local-{trig.id}"
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DriftloopError(f"local training run for {trig.id} failed: {last}")
        return run_id

    def state(self, run_id: str) -> Status:
        return "succeeded"  # start() returns only once the run has finished


@dataclass
class KfpBackend:
    """Creates the run on a Kubeflow Pipelines host through ``kfp.Client``."""

    host: str
    spec_path: str
    store_uri: str
    experiment: str = "driftloop"
    namespace: str | None = None
    token: str | None = None  # default: the in-cluster service-account token, if any
    n_trials: int = 4
    margin: float = 0.0
    name: str = "kfp"

    def _client(self):  # noqa: ANN202
        from pipelines.run import kfp_client

        return kfp_client(self.host, self.token or _service_account_token(), self.namespace)

    def start(self, trig: Trigger) -> str:
        from driftloop.spec import load_spec
        from pipelines.run import RunRequest, _submit

        req = RunRequest(
            spec=load_spec(self.spec_path),
            store_uri=self.store_uri,
            start=trig.train_window["start"],
            end=trig.train_window["end"],
            n_trials=self.n_trials,
            margin=self.margin,
            trigger_id=trig.id,
        )
        try:
            with self._client() as client:
                existing = _run_named(client, trig.run_name, self.namespace)
                if existing:
                    return existing  # a retry: the run exists already; never a second one
                return _submit(client, req, self.experiment, trig.run_name, None).run_id
        except DriftloopError:
            raise
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DriftloopError(f"cannot start a run on {self.host}: {first}") from e

    def state(self, run_id: str) -> Status:
        try:
            with self._client() as client:
                run = client.get_run(run_id)
        except Exception:
            return "running"  # unknown for now: keep the lease, look again next window
        s = str(getattr(run, "state", "") or "").upper()
        if s in ("SUCCEEDED",):
            return "succeeded"
        if s in ("FAILED", "CANCELED", "CANCELLED", "SKIPPED"):
            return "failed"
        return "running"


def _service_account_token() -> str | None:
    from pathlib import Path

    p = Path("/var/run/secrets/kubeflow/pipelines/token")  # KFP's projected SA token
    return p.read_text().strip() if p.is_file() else None


def _run_named(client, name: str, namespace: str | None) -> str | None:  # noqa: ANN001
    import json

    flt = json.dumps(
        {"predicates": [{"key": "display_name", "operation": "EQUALS", "stringValue": name}]}
    )
    resp = client.list_runs(namespace=namespace, filter=flt, page_size=1)
    runs = getattr(resp, "runs", None) or []
    return str(runs[0].run_id) if runs else None


def fire(log: TriggerLog, trig: Trigger, backend: Backend) -> Trigger | None:
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


def reconcile(log: TriggerLog, backend: Backend) -> list[Trigger]:
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


@dataclass
class InProcessBackend:
    """Runs the pipeline's steps in this process (``driftloop.steps.run_inprocess``):
    for benchmarks and tests that retrain many times. Not for production."""

    store: Store
    spec_text: str
    trials: list[dict]
    margin: float = 0.0
    name: str = "in-process"
    outcomes: dict[str, str] = field(default_factory=dict)  # run id -> gate summary

    def start(self, trig: Trigger) -> str:
        from driftloop.steps import run_inprocess, spec_from_text

        ref, decision = run_inprocess(
            spec_from_text(self.spec_text),
            self.store,
            trig.train_window["start"],
            trig.train_window["end"],
            self.trials,
            self.margin,
            True,
            trig.id,
        )
        run_id = f"inproc-{trig.id}"
        self.outcomes[run_id] = (f"v{ref.version} " if ref else "") + decision.summary
        return run_id

    def state(self, run_id: str) -> Status:
        return "succeeded"
