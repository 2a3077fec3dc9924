"""What the drift job measures per window beyond per-column drift, for triggers that mean
harm rather than change:

- ``recent_quality``: the served version's quality on every row it served in the last
  ``policy.quality_lookback`` whose label has arrived by now. Labels come late; re-reading
  the look-back at every window lets quality catch up on rows whose labels arrived after
  their own window was judged (the primary signal: realised harm).
- ``estimated``: the version's label-free estimate of its quality on this window
  (``driftloop.estimate``: CBPE for binary, DLE for regression), for the rows whose labels
  have not arrived yet.
- ``weighted_share``: the drifted-feature share weighted by the version's permutation
  importances (``driftloop.importance``): drift in a feature the model ignores is change,
  not harm.
- ``recent_drift_share``: drift of this window against the previous window of the same
  version (the distribution moving now), reported apart from the drift against the
  training reference (training-serving skew), as Vertex AI separates the two.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop.errors import DataError, NotFound
from driftloop.formats import TabularSchema
from driftloop.metrics import classification_metrics, regression_metrics
from driftloop.payloads import read_window

if TYPE_CHECKING:
    from driftloop.drift import DriftResult
    from driftloop.formats import InputSchema, Manifest
    from driftloop.registry import Registry, VersionRef
    from driftloop.store import Store

PREDICTION, SERVED_LABEL = "prediction", "label"


@dataclass(frozen=True)
class Measures:
    recent_quality: dict[str, float] | None = None  # incl. "rows": the labelled rows used
    estimated: dict[str, float] | None = None
    estimated_baseline: dict[str, float] | None = None  # the estimate on training-like rows
    weighted_share: float | None = None
    recent_drift_share: float | None = None


def quality(frame: pd.DataFrame, schema: InputSchema) -> dict[str, float] | None:
    """The task's metrics of what was served, on the rows of ``frame`` that have a label
    (the schema's target column, joined from delayed labels); None when none has."""
    target = schema.target
    if target not in frame.columns:
        return None
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        return None
    if schema.task == "regression":
        y = pd.to_numeric(labelled[target], errors="coerce").to_numpy(dtype=np.float64)
        p = labelled[PREDICTION].to_numpy(dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(p)
        if not ok.any():
            return None
        out = regression_metrics(y[ok], p[ok])
        return {**out, "rows": float(ok.sum())}
    y = labelled[target].astype(str).to_numpy()
    served = labelled[SERVED_LABEL].astype(str).to_numpy()
    proba = labelled[PREDICTION].to_numpy(dtype=np.float64) if schema.task == "binary" else None
    positive = schema.positive_label if schema.task == "binary" else None
    out = classification_metrics(y, served, proba, positive)
    return {**out, "rows": float(len(labelled))}


def measure(
    store: Store,
    registry: Registry,
    ref: VersionRef,
    manifest: Manifest,
    schema: InputSchema,
    endpoint: str,
    start: datetime,
    end: datetime,
    window: pd.DataFrame,
    drift: DriftResult,
    lookback: timedelta,
    min_rows: int,
) -> Measures:
    # 1. Realised quality over the look-back, on every label that has arrived.
    try:
        recent = read_window(store, ref, schema, endpoint, end - lookback, end)
        recent_quality = quality(recent, schema)
    except DataError:
        recent_quality = None
    # 2. The label-free estimate on this window, when the version carries an estimator.
    estimated, estimated_baseline = _estimate(registry, ref, manifest, schema, window)
    # 3. Drift weighted by what the model leans on.
    weighted = None
    imp = _file(registry, ref, manifest, "reference/importance.json")
    if imp is not None:
        from driftloop.importance import loads, weighted_share

        weighted = weighted_share(loads(imp), drift)
    # 4. Drift against the previous window (the distribution moving now), for tabular
    #    inputs (other kinds' families measure their own drift).
    recent_share = None
    if isinstance(schema, TabularSchema):
        recent_share = _recent_drift(store, ref, schema, endpoint, start, end, window, min_rows)
    return Measures(recent_quality, estimated, estimated_baseline, weighted, recent_share)


def _recent_drift(
    store: Store,
    ref: VersionRef,
    schema: TabularSchema,
    endpoint: str,
    start: datetime,
    end: datetime,
    window: pd.DataFrame,
    min_rows: int,
) -> float | None:
    from driftloop.drift import column_drift

    try:
        before = read_window(store, ref, schema, endpoint, start - (end - start), start)
    except DataError:  # no earlier window of this version
        return None
    if len(before) < min_rows:
        return None
    # Small windows go through Evidently's small-sample tests, whose scipy statistics warn
    # on degenerate counts (a category seen in one window only); the decision stands.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return column_drift(before, window, schema).drifted_share


def _estimate(
    registry: Registry,
    ref: VersionRef,
    manifest: Manifest,
    schema: InputSchema,
    window: pd.DataFrame,
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(the estimate on this window, the estimate on the version's reference)."""
    from driftloop import estimate

    names = [estimate.ESTIMATOR, estimate.SQUARED, estimate.ABSOLUTE]
    files = {n: data for n in names if (data := _file(registry, ref, manifest, n)) is not None}
    if estimate.ESTIMATOR not in files:
        return None, None
    est = estimate.Estimator.from_files(files)
    out: dict[str, Any] = est.estimate(window[schema.names], window[PREDICTION].to_numpy())
    now = {k: float(v) for k, v in out.items()} | {"rows": float(len(window))}
    return now, est.baseline


def _file(registry: Registry, ref: VersionRef, manifest: Manifest, name: str) -> bytes | None:
    if name not in manifest.files:
        return None
    try:
        return registry.read_file(ref, name, manifest)
    except NotFound:
        return None
