"""The threshold tuner against scikit-learn's scorers, threshold by threshold."""

import numpy as np
import pytest
from sklearn import metrics as skm

from driftloop.metrics import tune_threshold

SCORERS = {
    "f1": skm.f1_score,
    "accuracy": skm.accuracy_score,
    "precision": skm.precision_score,
    "recall": skm.recall_score,
}


def sklearn_tuned(y_pos: np.ndarray, proba: np.ndarray, target: str) -> float:
    """The tuner's definition, one scikit-learn call per candidate threshold."""
    candidates = np.unique(np.quantile(proba, np.linspace(0.01, 0.99, 197)))
    best_t, best_s = 0.5, -1.0
    for t in candidates:
        pred = proba >= t
        if target == "precision" and pred.sum() < max(10, 0.01 * len(pred)):
            continue
        kw = {} if target == "accuracy" else {"zero_division": 0}
        s = SCORERS[target](y_pos, pred, **kw)
        if s > best_s:
            best_t, best_s = float(t), float(s)
    return best_t


@pytest.mark.parametrize("target", [*SCORERS, "roc_auc"])
@pytest.mark.parametrize("prior", [0.03, 0.3, 0.0])
def test_tuned_threshold_equals_sklearn_scoring(target: str, prior: float) -> None:
    rng = np.random.default_rng(7)
    y_pos = (rng.random(3000) < prior).astype(int)
    # Informative but noisy scores, with ties (rounded) as real models produce.
    proba = np.round(np.clip(0.3 * y_pos + rng.normal(0.3, 0.2, 3000), 0, 1), 2)
    expected = sklearn_tuned(y_pos, proba, "f1" if target == "roc_auc" else target)
    assert tune_threshold(y_pos, proba, target) == expected
