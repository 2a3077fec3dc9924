"""Drift that matters: which features a model leans on, and how far a feature's drift
score moves by chance alone.

- **Importance**: permutation importance on data the model did not train on (the test
  window, with the gated model; scikit-learn's ``permutation_importance``, the spec's
  metric as the score), clipped at zero and normalised to sum to one (a model no
  permutation hurts gets equal weights). A drifted feature the model ignores is change,
  not harm.
- **Noise floor**: per feature, the mean plus four standard deviations of its drift score
  on windows drawn from the reference itself, at a few window sizes (a chance exceedance
  well under 1 in 1,000 windows, where a 95th percentile would false-trigger once in
  twenty). A feature counts as drifted in the
  weighted share only above its floor at the window's size as well as above Evidently's
  threshold: with 300 rows a 24-valued hour column crosses Jensen-Shannon 0.1 in about half
  of in-distribution windows, which the floor absorbs, while a real shift clears it.

Both are computed at registration and saved with the version (``reference/
importance.json``); the drift job reads them (``weighted_share``).
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop.families import FittedModel
from driftloop.formats import TabularSchema
from driftloop.metrics import better, scores
from driftloop.spec import DatasetSpec

if TYPE_CHECKING:
    from driftloop.drift import DriftResult

IMPORTANCE = "reference/importance.json"


def permutation_importance(
    model: FittedModel, rows: pd.DataFrame, spec: DatasetSpec, repeats: int = 3, seed: int = 0
) -> dict[str, float]:
    """Feature -> share of the metric's loss when that feature is shuffled."""
    from sklearn.inspection import permutation_importance as sk_importance

    features = list(model.inputs)
    sign = 1.0 if better(spec.metric, 1.0, 0.0) else -1.0  # sklearn maximises the score

    def scorer(est: _Fitted, x: pd.DataFrame, y: np.ndarray) -> float:
        frame = x.assign(**{spec.target: y})
        return sign * scores(est.model.predict(frame), frame, spec)[spec.metric]

    result = sk_importance(
        _Fitted(model),
        rows[features],
        rows[spec.target].to_numpy(),
        scoring=scorer,
        n_repeats=repeats,
        random_state=seed,
    )
    raw = np.clip(np.nan_to_num(result.importances_mean), 0.0, None)
    total = float(raw.sum())
    weights = raw / total if total > 0 else np.full(len(features), 1.0 / len(features))
    return {f: float(w) for f, w in zip(features, weights, strict=True)}


class _Fitted:
    """What scikit-learn's validation asks of an estimator (a ``fit``): already fitted."""

    def __init__(self, model: FittedModel) -> None:
        self.model = model

    def fit(self, *args: object) -> _Fitted:
        return self


NOISE_SIZES = (100, 300, 1000, 3000)  # window sizes the floor is measured at
NOISE_DRAWS = 40


def noise_floor(
    sample: pd.DataFrame, stats: dict, schema: TabularSchema, seed: int = 0
) -> dict[str, dict[int, float]]:
    """Feature -> {window size: mean + 4 sd of its drift score} on windows resampled from
    the reference ``sample`` (scored against its own statistics ``stats``)."""
    from driftloop.drift import column_drift

    rng = np.random.default_rng(seed)
    scores_: dict[str, dict[int, list[float]]] = {}
    for n in NOISE_SIZES:
        for _ in range(NOISE_DRAWS):
            window = sample.iloc[rng.integers(0, len(sample), n)]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                result = column_drift(stats, window, schema)
            for col, d in result.columns.items():
                scores_.setdefault(col, {}).setdefault(n, []).append(d.score)
    return {
        col: {n: float(np.mean(v) + 4 * np.std(v)) for n, v in by_n.items()}
        for col, by_n in scores_.items()
    }


def floor_at(floor: dict[int, float], rows: int) -> float:
    """The floor at ``rows``: the nearest measured size's, scaled by 1/sqrt(rows) (sampling
    noise of a distance shrinks with the root of the window)."""
    n = min(floor, key=lambda size: abs(np.log(size / max(rows, 1))))
    return float(floor[n] * np.sqrt(n / max(rows, 1)))


def weighted_share(aids: dict[str, Any], drift: DriftResult) -> float:
    """The importance-weighted share of features drifted beyond Evidently's threshold and
    their noise floor at this window's size (1.0: everything the model leans on)."""
    importance, floors = aids["importance"], aids.get("noise", {})
    total = 0.0
    for col, d in drift.columns.items():
        if not d.drifted:
            continue
        floor = floors.get(col)
        if floor is not None and d.score < floor_at(floor, drift.current_rows):
            continue  # within what chance alone moves it at this window size
        total += importance.get(col, 0.0)
    return float(total)


def dumps(importance: dict[str, float], noise: dict[str, dict[int, float]]) -> str:
    return json.dumps({"importance": importance, "noise": noise}, indent=2)


def loads(text: bytes | str) -> dict[str, Any]:
    doc = json.loads(text)
    return {
        "importance": {str(k): float(v) for k, v in doc["importance"].items()},
        "noise": {
            str(c): {int(n): float(q) for n, q in by_n.items()}
            for c, by_n in doc.get("noise", {}).items()
        },
    }
