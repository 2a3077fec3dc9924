from kfp.dsl import HTML, Metrics, Output

from components import component


@component
def drift(
    model: str,
    store_uri: str,
    start: str,
    end: str,
    endpoint: str,
    report: Output[HTML],
    metrics: Output[Metrics],
) -> bool:
    """One drift window as a pipeline step (e.g. in a monitoring pipeline or a backfill):
    the Evidently report renders in the KFP UI. Decides only; it triggers nothing.
    Returns whether the default policy would trigger."""
    from datetime import datetime
    from pathlib import Path

    from driftloop.monitor import run_window
    from driftloop.policy import DriftPolicy
    from driftloop.settings import load_settings
    from driftloop.store import open_store

    store = open_store(load_settings(store_uri=store_uri))
    result = run_window(
        store,
        model,
        datetime.fromisoformat(start),
        datetime.fromisoformat(end),
        policy=DriftPolicy(),
        backend=None,
        endpoint=endpoint,
    )
    Path(report.path).write_bytes(store.get(result.report_key))
    metrics.log_metric("rows", result.rows)
    metrics.log_metric("drifted_share", result.drifted_share)
    for name, value in (result.quality or {}).items():
        metrics.log_metric(f"quality_{name}", value)
    report.metadata.update({"version": result.version, "reasons": result.reasons})
    return result.trigger
