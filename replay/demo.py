"""``make demo`` (``python -m replay.demo``): the whole loop on one machine, on bike sharing.

1. train, gate and register a model on 2011 with the real pipeline (kfp.local);
2. serve it with the real predictor (``driftloop serve``, following the production alias)
   and log every request through the real collector (KServe's CloudEvents);
3. replay 2012 through HTTP in two-week windows; each window's labels arrive one window
   later through the collector's ``/labels``;
4. after each window the drift job runs (Evidently decisions + report, the policy in
   ``data/bike_policy.yaml``); a trigger retrains with the pipeline on the trailing 180
   days; a challenger that passes the gate is promoted and the server hot-swaps to it.

Outputs (paths printed at the end): a per-window table, ``demo-output/dashboard.html``
(with links to every Evidently report) and ``demo-output/loop.png``. Rerunnable: the demo
store ``.driftloop/demo`` is reset each time; ports are free ones; every child process is
stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from driftloop import entrypoint
from driftloop.data import TIME, load_window
from driftloop.errors import DriftloopError
from driftloop.formats import VersionFiles, VersionMetrics
from driftloop.monitor import run_window
from driftloop.policy import load_policy
from driftloop.ports import free_port
from driftloop.registry import Registry, VersionRef
from driftloop.settings import Settings, load_settings
from driftloop.spec import load_spec
from driftloop.store import open_store
from driftloop.trigger import TriggerLog
from monitoring.backends import LocalBackend
from replay.dashboard import WindowRow, dashboard, plot, table

ROOT = Path(__file__).resolve().parents[1]
DEMO_STORE = ROOT / ".driftloop" / "demo"
OUT = ROOT / "demo-output"
MODEL = "bike-sharing"
WINDOW = timedelta(days=14)
TRIALS = 2  # per retraining run: keeps the demo within ~10 minutes on 2 cores


@contextmanager
def services(store_uri: str):
    """The collector and the predictor as child processes; always stopped afterwards."""
    env = {**os.environ, "DRIFTLOOP_STORE_URI": store_uri}
    c_port, p_port = free_port(), free_port()
    procs = []
    # Service logs go to files: a pipe nobody reads fills up and blocks the server.
    logs = [open(OUT / "collector.log", "wb"), open(OUT / "predictor.log", "wb")]  # noqa: SIM115
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitoring.collector",
                    "--port",
                    str(c_port),
                    "--max-age",
                    "0.5",
                ],
                env=env,
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "driftloop.cli",
                    "serve",
                    "--model",
                    MODEL,
                    "--port",
                    str(p_port),
                    "--logger-url",
                    f"http://127.0.0.1:{c_port}/",
                    "--watch-interval",
                    "0.5",
                ],
                env=env,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )
        )
        collector, predictor = f"http://127.0.0.1:{c_port}", f"http://127.0.0.1:{p_port}"
        _wait_ready(f"{collector}/healthz", procs[0], OUT / "collector.log")
        _wait_ready(f"{predictor}/v2/health/ready", procs[1], OUT / "predictor.log")
        yield collector, predictor
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)  # the collector flushes what it holds
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise DriftloopError(f"a demo service exited at start (see {log}): {tail}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DriftloopError(f"{url} did not become ready in {timeout:.0f} s")


class Replay:
    """Sends rows as single-instance V1 requests with their event time; keeps answers."""

    def __init__(self, predictor: str, collector: str, features: list[str]) -> None:
        self.http = httpx.Client(timeout=10)
        self.url = f"{predictor}/v1/models/{MODEL}:predict"
        self.collector, self.features, self.sent = collector, features, 0

    def __enter__(self) -> Replay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def window(self, df: pd.DataFrame) -> pd.DataFrame:
        ids, preds, versions = [], [], []
        for rec, ts in zip(df[self.features].to_dict("records"), df[TIME], strict=True):
            rid = uuid.uuid4().hex
            r = self.http.post(
                self.url,
                headers={"x-request-id": rid},
                json={"instances": [rec], "timestamp": ts.isoformat()},
            )
            r.raise_for_status()
            body = r.json()
            ids.append(rid)
            preds.append(float(body["predictions"][0]))
            versions.append(str(body["model_version"]))
        self.sent += len(df)
        return df.assign(request_id=ids, prediction=preds, served_by=versions)

    def labels(self, served: pd.DataFrame) -> None:
        labels = [
            {"request_id": r, "label": float(y)}
            for r, y in zip(served["request_id"], served["cnt"], strict=True)
        ]
        self.http.post(
            f"{self.collector}/labels", json={"model": MODEL, "labels": labels}
        ).raise_for_status()

    def wait_flushed(self, timeout: float = 30) -> None:
        """Until the collector has written every row sent so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.http.get(f"{self.collector}/metrics").text
            written = sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("driftloop_collector_rows_written_total")
            )
            if written >= self.sent:
                return
            time.sleep(0.2)
        raise DriftloopError("the collector did not write every logged request in time")

    def wait_version(self, version: int, timeout: float = 30) -> None:
        """Until the server's hot swap to ``version`` is done (its /metrics gauge)."""
        deadline = time.monotonic() + timeout
        metrics = self.url.split("/v1/")[0] + "/metrics"
        while time.monotonic() < deadline:
            for line in self.http.get(metrics).text.splitlines():
                if (
                    line.startswith("driftloop_served_version{")
                    and float(line.split()[-1]) == version
                ):
                    return
            time.sleep(0.2)
        raise DriftloopError(f"the server did not swap to v{version} in time")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.run import RunRequest, run_local

    t0 = time.perf_counter()
    shutil.rmtree(DEMO_STORE, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    store = open_store(load_settings(store_uri=str(DEMO_STORE)))
    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    registry = Registry(store)

    # 1. The first model: the training pipeline on 2011.
    print(
        "[1/3] training pipeline on bike sharing 2011 (kfp.local; 2 LightGBM and 2 MLP "
        "trials compete)...",
        flush=True,
    )
    run = run_local(RunRequest(spec=spec, store_uri=store.uri, end="2012-01-01"), store, quiet=True)
    if run.version is None:
        print("the first model did not pass the gate:\n" + run.gate)
        return 1
    _print_metrics(registry, run.version)

    # 2. Serve it, log it, replay 2012 window by window.
    policy = load_policy(ROOT / "data" / "bike_policy.yaml")
    backend = LocalBackend(
        spec_path=str(ROOT / "data" / "bike_sharing.yaml"), store_uri=store.uri, n_trials=TRIALS
    )
    year = load_window(spec, "2012-01-01", "2013-01-01")
    rows: list[WindowRow] = []
    print("\n[2/3] serving v1; replaying 2012 through HTTP in two-week windows...", flush=True)
    with (
        services(store.uri) as (collector, predictor),
        Replay(predictor, collector, spec.features) as replay,
    ):
        previous = None
        start = datetime(2012, 1, 1)
        while start < datetime(2013, 1, 1):
            end = min(start + WINDOW, datetime(2013, 1, 1))
            part = year[(year[TIME] >= start) & (year[TIME] < end)]
            served = replay.window(part)
            if previous is not None:
                replay.labels(previous)  # last window's ground truth arrives now
            replay.wait_flushed()
            rows.append(_window(store, registry, policy, backend, replay, served, start, end))
            print("  " + table([rows[-1]]).splitlines()[-1], flush=True)
            previous, start = served, end
        if previous is not None:
            replay.labels(previous)

    # 3. The record.
    png = plot(rows, OUT / "loop.png", "driftloop on bike sharing 2012: served error and drift")
    notes = (
        f"Model trained on 2011; 2012 replayed in two-week windows; policy "
        f"data/bike_policy.yaml; retraining on the trailing 180 days: {TRIALS} fresh trials "
        "(LightGBM, MLP) and the production MLP fine-tuned compete; earlier versions too."
    )
    page = dashboard(rows, OUT / "dashboard.html", png, "driftloop loop demo", notes)
    print("\n[3/3] per window:\n" + table(rows))
    rmse = float(np.sqrt(np.mean([(r.served or 0.0) ** 2 for r in rows])))
    print(
        f"\nserved RMSE over 2012: {rmse:.1f}; versions: {registry.versions(MODEL)}; "
        f"production: v{registry.alias(MODEL, 'production')}"
    )
    print(f"dashboard: {page}\nplot:      {png}\nstore:     {store.uri}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def _window(store, registry, policy, backend, replay, served, start, end) -> WindowRow:
    """Run the drift job on a served window; the dashboard row for it: what fired, what
    the policy decided, and what the retraining run's outcome was."""
    before = registry.alias(MODEL, "production")
    row = WindowRow(
        start=start.isoformat(),
        end=end.isoformat(),
        rows=len(served),
        version="→".join(sorted(set(served["served_by"]), key=int)),
        family=registry.manifest(VersionRef(MODEL, before)).family if before else "-",
        metric="rmse",
        served=float(np.sqrt(np.mean((served["prediction"] - served["cnt"]) ** 2))),
        drifted_share=None,
    )
    try:
        r = run_window(store, MODEL, start, end, policy=policy, backend=backend)
    except DriftloopError as e:  # e.g. too few rows: shown, never fatal to the loop
        row.decision = f"skipped: {e}"
        return row
    row.drifted_share, row.signals = r.drifted_share, list(r.signals)
    row.decision = "TRIGGER" if r.trigger else "-"
    row.estimated = (r.estimated or {}).get("rmse")
    report = store.local_path(r.report_key)
    row.report = report.as_uri() if report else r.report_key
    after = registry.alias(MODEL, "production")
    if r.trigger_id:
        trig = TriggerLog(store, MODEL).get(r.trigger_id)
        verdict, _, why = (trig.outcome or "").partition(": ")
        row.gate = why
        if after != before:
            row.event = f"v{after} {'restored' if verdict.startswith('restored') else 'promoted'}"
            replay.wait_version(after)
        elif trig.status == "failed":
            row.event = f"run failed: {(trig.error or '')[:80]}"
        else:
            row.event = f"refused by the gate ({verdict or 'not promoted'})"
    return row


def _print_metrics(registry: Registry, version: int) -> None:
    ref = VersionRef(MODEL, version)
    metrics = VersionMetrics.parse(registry.read_file(ref, VersionFiles.METRICS), str(ref))
    print(f"registered {MODEL} v{version} -> production")
    family = registry.manifest(ref).family
    print(f"{'model':22s} {'RMSE':>8s} {'MAE':>8s} {'R2':>7s}   (test window, late 2011)")
    for name, m in [(f"{family} (served)", metrics.test)] + [
        (f"baseline: {n}", m) for n, m in sorted(metrics.baselines.items())
    ]:
        print(f"{name:22s} {m['rmse']:8.2f} {m['mae']:8.2f} {m['r2']:7.3f}")


def main(argv: list[str] | None = None) -> int:
    return entrypoint.main(
        "python -m replay.demo", __doc__.split("\n")[0], lambda p: None, run, argv
    )


if __name__ == "__main__":
    sys.exit(main())
