"""The drift job: one window of served traffic against the production model's reference.

    driftloop monitor run --model bike-sharing --start 2012-01-01 --end 2012-01-08
    python -m monitoring.job ...              (the same, as the CronJob runs it)

For a model, an endpoint (``default`` or ``canary``) and a window ``[start, end)``:

1. resolve the served version; load its schema, test metrics and precomputed reference
   statistics (``reference/stats.json``, written at registration);
2. read the window's payload logs and join the delayed labels that have arrived;
3. per-column drift with Evidently's decisions (``driftloop.drift``), the Evidently HTML
   report on a sample, and quality vs the version's test metrics when labels cover it;
4. the policy decides (``driftloop.policy``: share, key features, quality, hysteresis,
   cooldown, never while a run is in flight), with the window's end as "now" so that
   replays and backfills decide exactly as live traffic would;
5. a trigger starts exactly one retraining run (``driftloop.trigger``); a failed start is
   retried by the next window under the same trigger id.

Everything is written under ``monitoring/<model>/windows/<window-id>/`` (report.html,
quality.html, summary.json). The retraining run gets a fresh window of the source data,
``[end - retrain_days, end)``: ground truth for every row, labels included.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from driftloop.drift import STATS_FILE, column_drift, evidently_report, load_statistics
from driftloop.errors import DataError
from driftloop.payloads import feature_column, join_labels, read_labels, read_logs
from driftloop.policy import DriftPolicy, WindowSummary, decide
from driftloop.registry import Registry, VersionRef
from driftloop.store import Store
from driftloop.trigger import Backend, Trigger, TriggerLog, fire, reconcile, trigger_id


@dataclass(frozen=True)
class WindowResult:
    window_id: str
    version: int
    rows: int
    drifted_share: float
    drifted_columns: list[str]
    quality: dict | None
    trigger: bool
    reasons: list[str]
    trigger_id: str | None
    trigger_status: str | None
    report_key: str


def window_id(endpoint: str, start: datetime, end: datetime) -> str:
    return f"{endpoint}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"


def load_window(
    store: Store, ref: VersionRef, schema: dict, endpoint: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """The window's logged rows (features under their own names, ``prediction``), with the
    target column filled from delayed labels where they have arrived."""
    logs = read_logs(store, ref.model, ref.version, endpoint, start, end)
    if logs.empty:
        raise DataError(
            f"empty window: no logged requests for {ref.model} v{ref.version} "
            f"({endpoint}) in [{start}, {end})"
        )
    logs = logs.rename(columns={feature_column(f["name"]): f["name"] for f in schema["features"]})
    missing = [f["name"] for f in schema["features"] if f["name"] not in logs.columns]
    if missing:
        raise DataError(
            f"the logs of {ref.model} v{ref.version} lack feature column(s) "
            f"{missing}: they do not match the version's schema"
        )
    labels = read_labels(store, ref.model, start=start)
    target = schema["target"]
    if labels.empty:
        logs[target] = None
        return logs
    joined = join_labels(logs, labels)
    joined[target] = joined["actual_value"] if schema["task"] == "regression" else joined["actual"]
    return joined.drop(columns=["actual", "actual_value", "label_time"])


def run_window(
    store: Store,
    model: str,
    start: datetime,
    end: datetime,
    *,
    policy: DriftPolicy,
    backend: Backend | None,
    endpoint: str = "default",
    version: int | None = None,
    retrain_days: int = 180,
    report_rows: int = 5_000,
) -> WindowResult:
    registry = Registry(store)
    ref = registry.resolve(model, version)
    manifest = registry.manifest(ref)
    schema = json.loads(registry.read_file(ref, "schema.json", manifest))
    test_metrics = json.loads(registry.read_file(ref, "metrics.json", manifest))["test"]
    stats = load_statistics(registry.read_file(ref, STATS_FILE, manifest))
    window = load_window(store, ref, schema, endpoint, start, end)
    wid = window_id(endpoint, start, end)
    prefix = f"monitoring/{model}/windows/{wid}"

    # 1. Drift decisions (fast, exact) and the Evidently report (on a sample) + quality.
    drift = column_drift(stats, window, schema)
    report: dict = {"quality": None, "sample": None, "drift": None}
    if report_rows > 0:  # 0: decisions only (backfills, benchmarks): no HTML, no quality
        sample = registry.read_file(ref, "reference/sample.parquet", manifest)
        reference = pd.read_parquet(_bytes_io(sample))
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / "report.html"
            report = evidently_report(reference, window, schema, html, sample_rows=report_rows)
            for f in Path(tmp).iterdir():
                store.put(f"{prefix}/{f.name}", f.read_bytes())
    summary = WindowSummary.from_drift(
        start, end, drift, quality=report["quality"], baseline=test_metrics
    )

    # 2. The decision, then (maybe) the trigger, under the lease.
    log = TriggerLog(store, model)
    triggers = reconcile(log, backend) if backend is not None else log.all()
    last = max((datetime.fromisoformat(t.window["end"]) for t in triggers), default=None)
    history = _history(store, model, endpoint, before=start, after=last)
    decision = decide(
        policy,
        history,
        summary,
        now=end,
        last_trigger_time=last,
        run_in_flight=log.held() is not None,
    )
    fired: Trigger | None = None
    if backend is not None and (retry := log.retryable(triggers)) is not None:
        fired = fire(log, retry, backend)  # the same trigger id: never a duplicate run
    elif decision.trigger and backend is not None:
        end_iso = end.isoformat()
        fired = Trigger(
            id=trigger_id(model, end_iso),
            model=model,
            version=ref.version,
            reason=decision.reasons,
            window={"start": start.isoformat(), "end": end_iso},
            evidence={"report": f"{prefix}/report.html", "summary": f"{prefix}/summary.json"},
            train_window={
                "start": (end - timedelta(days=retrain_days)).isoformat(),
                "end": end_iso,
            },
        )
        # Another job may have recorded this window's trigger first: then it fires it.
        fired = fire(log, fired, backend) if log.create(fired) else None

    result = WindowResult(
        window_id=wid,
        version=ref.version,
        rows=drift.current_rows,
        drifted_share=drift.drifted_share,
        drifted_columns=drift.drifted_columns,
        quality=report["quality"],
        trigger=decision.trigger,
        reasons=decision.reasons,
        trigger_id=fired.id if fired else None,
        trigger_status=fired.status if fired else None,
        report_key=f"{prefix}/report.html",
    )
    store.put_json(
        f"{prefix}/summary.json",
        {
            **asdict(result),
            "model": model,
            "endpoint": endpoint,
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "drift": drift.to_dict(),
            "baseline": test_metrics,
            "sample": report["sample"],
            "evidently_decisions": report["drift"],
        },
    )
    return result


def _history(
    store: Store, model: str, endpoint: str, before: datetime, after: datetime | None
) -> list[WindowSummary]:
    """Earlier windows of this endpoint, oldest first (for hysteresis). Windows that ended
    by ``after`` (the last trigger's window) cannot count towards a streak: their summaries
    are not read, so a long-running job does not re-read its whole past every window."""
    out = []
    for key in store.list(f"monitoring/{model}/windows"):
        if not key.endswith("/summary.json") or f"/windows/{endpoint}-" not in key:
            continue
        # window_id ends with the window end, to the minute.
        end_id = datetime.strptime(key.rsplit("/", 2)[-2].rsplit("-", 1)[1], "%Y%m%dT%H%M")
        if after is not None and end_id + timedelta(minutes=1) <= after:
            continue
        s = dict(store.get_json(key))
        start = datetime.fromisoformat(s["window"]["start"])
        if start < before:
            prediction = s["drift"].get("prediction") or {}
            out.append(
                WindowSummary(
                    start,
                    datetime.fromisoformat(s["window"]["end"]),
                    s["rows"],
                    s["drifted_share"],
                    s["drifted_columns"],
                    bool(prediction.get("drifted")),
                    s["quality"],
                    s["baseline"],
                )
            )
    return sorted(out, key=lambda w: w.start)


def _bytes_io(data: bytes):  # noqa: ANN202
    import io

    return io.BytesIO(data)
