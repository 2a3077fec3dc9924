"""What a drift trigger starts: the retraining run, in one of three places.

    InProcessBackend   the pipeline's steps in this process (``driftloop backtest``)
    LocalBackend       the training pipeline with kfp.local, in a child process
    KfpBackend         a run on Kubeflow Pipelines through ``kfp.Client``

Each implements ``driftloop.trigger.Backend``; ``driftloop.trigger.fire`` calls it under
the trigger's lease, so whichever backend is used, one trigger starts one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftloop.errors import DriftloopError
from driftloop.formats import TriggerRecord, TriggerStatus
from driftloop.spec import DatasetSpec
from driftloop.store import Store


@dataclass
class InProcessBackend:
    """Runs the pipeline's steps in this process (``driftloop.steps.run_inprocess``), for
    backtests that retrain many times: the same steps as the pipeline, none of its
    per-step process start-up. The run has finished when ``start`` returns."""

    store: Store
    spec: DatasetSpec
    trials: list[dict[str, Any]]
    margin: float = 0.0
    name: str = "in-process"
    outcomes: dict[str, str] = field(default_factory=dict)  # run id -> gate summary

    def start(self, trig: TriggerRecord) -> str:
        from driftloop.steps import run_inprocess

        ref, decision = run_inprocess(
            self.spec,
            self.store,
            trig.train_window.start,
            trig.train_window.end,
            self.trials,
            self.margin,
            True,
            trig.id,
        )
        run_id = f"inproc-{trig.id}"
        self.outcomes[run_id] = (f"v{ref.version} " if ref else "") + decision.summary
        return run_id

    def state(self, run_id: str) -> TriggerStatus:
        return "succeeded"


@dataclass
class LocalBackend:
    """Runs the training pipeline with kfp.local in a child process and waits for it."""

    spec_path: str
    store_uri: str
    n_trials: int = 4
    margin: float = 0.0
    timeout_s: float = 1800
    name: str = "local"

    def start(self, trig: TriggerRecord) -> str:
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
            trig.train_window.start,
            "--end",
            trig.train_window.end,
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

    def state(self, run_id: str) -> TriggerStatus:
        return "succeeded"  # start() returns only once the run has finished


@dataclass
class KfpBackend:
    """Creates the run on a Kubeflow Pipelines host through ``kfp.Client``. The spec's
    local files are uploaded to ``store`` first, so the cluster can read them."""

    host: str
    spec_path: str
    store: Store
    experiment: str = "driftloop"
    namespace: str | None = None
    token: str | None = None  # default: the in-cluster service-account token, if any
    n_trials: int = 4
    margin: float = 0.0
    name: str = "kfp"

    def _client(self) -> Any:
        from pipelines.run import kfp_client

        return kfp_client(self.host, self.token or _service_account_token(), self.namespace)

    def start(self, trig: TriggerRecord) -> str:
        from driftloop.spec import load_spec
        from pipelines.run import RunRequest, create_run, stage

        req = RunRequest(
            spec=load_spec(self.spec_path),
            store_uri=self.store.uri,
            start=trig.train_window.start,
            end=trig.train_window.end,
            n_trials=self.n_trials,
            margin=self.margin,
            trigger_id=trig.id,
        )
        try:
            req = stage(req, self.store)
            with self._client() as client:
                existing = _run_named(client, trig.run_name, self.namespace)
                if existing:
                    return existing  # a retry: the run exists already; never a second one
                return create_run(client, req, self.experiment, trig.run_name, None).run_id
        except DriftloopError:
            raise
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DriftloopError(f"cannot start a run on {self.host}: {first}") from e

    def state(self, run_id: str) -> TriggerStatus:
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
    p = Path("/var/run/secrets/kubeflow/pipelines/token")  # KFP's projected SA token
    return p.read_text().strip() if p.is_file() else None


def _run_named(client: Any, name: str, namespace: str | None) -> str | None:
    flt = json.dumps(
        {"predicates": [{"key": "display_name", "operation": "EQUALS", "stringValue": name}]}
    )
    resp = client.list_runs(namespace=namespace, filter=flt, page_size=1)
    runs = getattr(resp, "runs", None) or []
    return str(runs[0].run_id) if runs else None
