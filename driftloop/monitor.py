"""The drift job: one window of served traffic against the production model's reference.

    driftloop monitor run --model bike-sharing --start 2012-01-01 --end 2012-01-08
    python -m monitoring.job ...              (the same, as the CronJob runs it)

For a model, an endpoint (``default`` or ``canary``) and a window ``[start, end)``:

1. resolve the served version; load its schema, test metrics and precomputed reference
   statistics (``reference/stats.json``, written at registration); its family decides how
   drift is measured;
2. read the window's payload logs and join the delayed labels that have arrived;
3. drift with Evidently's decisions (``family.drift``), the Evidently HTML report on a
   sample and quality vs the version's test metrics when labels cover it (``family.report``);
4. the policy decides (``driftloop.policy``: share, key features, quality, hysteresis,
   cooldown, never while a run is in flight), with the window's end as "now" so that
   replays and backfills decide exactly as live traffic would;
5. a trigger starts exactly one retraining run (``driftloop.trigger``) through the
   ``Backend`` the caller passes; a failed start is retried by the next window under the
   same trigger id.

Everything is written under ``monitoring/<model>/windows/<window-id>/`` (report.html,
report.quality.html, summary.json: a ``WindowRecord``). The retraining run gets a fresh
window of the source data, ``[end - retrain_days, end)``: ground truth for every row.
"""

from __future__ import annotations

import io
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from driftloop.drift import load_statistics
from driftloop.families import get_family
from driftloop.formats import (
    WINDOW_REPORT,
    WINDOW_SUMMARY,
    DriftRecord,
    TimeWindow,
    TriggerRecord,
    VersionFiles,
    VersionMetrics,
    WindowRecord,
    parse_schema,
    parse_window_id,
    window_id,
    window_prefix,
    windows_prefix,
)
from driftloop.payloads import read_window
from driftloop.policy import DriftPolicy, WindowSummary, check_policy, decide
from driftloop.registry import Registry
from driftloop.signals import measure
from driftloop.store import Store
from driftloop.trigger import (
    Backend,
    TriggerLog,
    fire,
    in_flight,
    last_completed,
    reconcile,
    trigger_id,
)


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
) -> WindowRecord:
    registry = Registry(store)
    ref = registry.resolve(model, version)
    manifest = registry.manifest(ref)
    family = get_family(manifest.family, str(ref))
    where = f"{ref}/{VersionFiles.SCHEMA}"
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA, manifest), where)
    metrics = VersionMetrics.parse(
        registry.read_file(ref, VersionFiles.METRICS, manifest), f"{ref}/{VersionFiles.METRICS}"
    )
    check_policy(policy, schema.drift_columns)
    stats = load_statistics(registry.read_file(ref, VersionFiles.REFERENCE_STATS, manifest))
    window = read_window(store, ref, schema, endpoint, start, end)
    wid = window_id(endpoint, start, end)
    prefix = window_prefix(model, wid)

    # 1. Drift decisions (fast, exact) and the Evidently report (on a sample) + quality.
    drift = family.drift(stats, window, schema)
    report: dict = {"quality": None, "sample": None, "drift": None}
    if report_rows > 0:  # 0: decisions only (backfills, benchmarks): no HTML, no quality
        sample = registry.read_file(ref, VersionFiles.REFERENCE_SAMPLE, manifest)
        reference = pd.read_parquet(io.BytesIO(sample))
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / WINDOW_REPORT
            report = family.report(reference, window, schema, html, report_rows)
            for f in Path(tmp).iterdir():
                store.put(f"{prefix}/{f.name}", f.read_bytes())
    # 2. Harm rather than change: realised quality over the look-back, the label-free
    #    estimate, drift weighed by importance, drift against the previous window.
    measures = measure(
        store,
        registry,
        ref,
        manifest,
        schema,
        endpoint,
        start,
        end,
        window,
        drift,
        policy.quality_lookback,
        policy.min_rows,
    )
    summary = WindowSummary.from_drift(
        start, end, drift, quality=report["quality"], baseline=metrics.test, measures=measures
    )

    # 3. The decision, then (maybe) the trigger, under the lease.
    log = TriggerLog(store, model)
    triggers = reconcile(log, backend) if backend is not None else log.all()
    last = max((datetime.fromisoformat(t.window.end) for t in triggers), default=None)
    history = window_history(store, model, endpoint, before=start, after=last)
    decision = decide(
        policy,
        history,
        summary,
        now=end,
        last_trigger_time=last,
        run_in_flight=in_flight(log, triggers),
        last_completed=last_completed(triggers),
    )
    fired: TriggerRecord | None = None
    if backend is not None and (retry := log.retryable(triggers)) is not None:
        fired = fire(log, retry, backend)  # the same trigger id: never a duplicate run
    elif decision.trigger and backend is not None:
        end_iso = end.isoformat()
        fired = TriggerRecord(
            id=trigger_id(model, end_iso),
            model=model,
            version=ref.version,
            reason=decision.reasons,
            window=TimeWindow(start=start.isoformat(), end=end_iso),
            evidence={
                "report": f"{prefix}/{WINDOW_REPORT}",
                "summary": f"{prefix}/{WINDOW_SUMMARY}",
            },
            train_window=TimeWindow(
                start=(end - timedelta(days=retrain_days)).isoformat(), end=end_iso
            ),
        )
        # Another job may have recorded this window's trigger first: then it fires it.
        fired = fire(log, fired, backend) if log.create(fired) else None

    record = WindowRecord(
        window_id=wid,
        model=model,
        endpoint=endpoint,
        version=ref.version,
        window=TimeWindow(start=start.isoformat(), end=end.isoformat()),
        rows=drift.current_rows,
        drifted_share=drift.drifted_share,
        drifted_columns=drift.drifted_columns,
        missing_columns=drift.missing_columns,
        quality=report["quality"],
        baseline=metrics.test,
        trigger=decision.trigger,
        reasons=decision.reasons,
        signals=decision.signals,
        recent_quality=measures.recent_quality,
        estimated=measures.estimated,
        estimated_baseline=measures.estimated_baseline,
        weighted_share=measures.weighted_share,
        recent_drift_share=measures.recent_drift_share,
        trigger_id=fired.id if fired else None,
        trigger_status=fired.status if fired else None,
        trigger_outcome=(fired.outcome or None) if fired else None,
        report_key=f"{prefix}/{WINDOW_REPORT}",
        drift=DriftRecord.model_validate(drift.to_dict()),
        sample=report["sample"],
        evidently_decisions=report["drift"],
    )
    store.put(f"{prefix}/{WINDOW_SUMMARY}", record.dump())
    return record


def window_history(
    store: Store, model: str, endpoint: str, before: datetime, after: datetime | None
) -> list[WindowSummary]:
    """Earlier windows of this endpoint, oldest first (for hysteresis). Windows that ended
    by ``after`` (the last trigger's window) cannot count towards a streak: their summaries
    are not read, so a long-running job does not re-read its whole past every window."""
    out = []
    for key in store.list(windows_prefix(model)):
        if not key.endswith(f"/{WINDOW_SUMMARY}"):
            continue
        parsed = parse_window_id(key.rsplit("/", 2)[-2])
        if parsed is None or parsed[0] != endpoint:
            continue
        _, _, end_id = parsed  # the window end, to the minute
        if after is not None and end_id + timedelta(minutes=1) <= after:
            continue
        record: WindowRecord = WindowRecord.parse(store.get(key), f"{store.uri}/{key}")
        summary = WindowSummary.from_record(record)
        if summary.start < before:
            out.append(summary)
    return sorted(out, key=lambda w: w.start)
