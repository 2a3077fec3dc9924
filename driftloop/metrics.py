"""Evaluation metrics (scikit-learn) and the decision-threshold tuner.

Regression: rmse, mae, r2. Classification: accuracy, precision, recall, f1, roc_auc,
plus the confusion matrix and ROC curve for KFP's ``ClassificationMetrics``. Ranking
(recommenders): ndcg10, recall10, hitrate10, map10, coverage (``driftloop.recsys_metrics``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import metrics as skm

from driftloop.spec import LOWER_IS_BETTER

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.spec import DatasetSpec


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)),
    }


def classification_metrics(
    y: np.ndarray, label: np.ndarray, proba: np.ndarray | None, positive: str | None
) -> dict[str, float]:
    """``proba``: P(positive) for binary (enables roc_auc); None for multiclass."""
    binary = positive is not None
    avg = "binary" if binary else "macro"
    kw: dict[str, Any] = {"pos_label": positive} if binary else {}
    out = {
        "accuracy": float(skm.accuracy_score(y, label)),
        "precision": float(skm.precision_score(y, label, average=avg, zero_division=0, **kw)),
        "recall": float(skm.recall_score(y, label, average=avg, zero_division=0, **kw)),
        "f1": float(skm.f1_score(y, label, average=avg, zero_division=0, **kw)),
    }
    if binary and proba is not None:
        y_pos = (np.asarray(y) == positive).astype(int)
        both = 0 < y_pos.sum() < len(y_pos)
        out["roc_auc"] = float(skm.roc_auc_score(y_pos, proba)) if both else float("nan")
    return out


def scores(pred: dict[str, np.ndarray], df: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """The spec's task metrics of a ``FittedModel.predict`` output against ``df``'s target."""
    if spec.task == "ranking":
        from driftloop.recsys_metrics import prediction_metrics

        return prediction_metrics(pred, df, spec)
    y = df[spec.target].to_numpy()
    if spec.task == "regression":
        return regression_metrics(y.astype("float64"), pred["value"])
    return classification_metrics(
        y.astype(str),
        pred["label"],
        pred.get("probability") if spec.task == "binary" else None,
        spec.positive_label,
    )


def better(metric: str, a: float, b: float, margin: float = 0.0) -> bool:
    """Is ``a`` strictly better than ``b`` by more than ``margin`` (relative) in ``metric``?"""
    if metric in LOWER_IS_BETTER:
        return a < b * (1 - margin)
    return a > b + abs(b) * margin


def tune_threshold(y_pos: np.ndarray, proba: np.ndarray, metric: str) -> float:
    """The threshold on P(positive) that maximises ``metric`` on validation.

    For threshold-free metrics (roc_auc) F1 is maximised instead: a ranking metric still
    needs a decision rule, and F1 is the usual one under class imbalance.
    """
    target = metric if metric in {"f1", "accuracy", "precision", "recall"} else "f1"
    candidates = np.unique(np.quantile(proba, np.linspace(0.01, 0.99, 197)))
    # Every candidate at once: one confusion matrix per threshold (rows), then the same
    # formulas scikit-learn uses, zero_division=0. Training tunes after every epoch, and
    # one scorer call per threshold was most of a binary model's training time.
    y = np.asarray(y_pos).astype(bool)
    pred = np.asarray(proba)[None, :] >= candidates[:, None]
    n, positives = len(y), int(y.sum())
    predicted = pred.sum(axis=1)
    tp = (pred & y).sum(axis=1)
    fp, fn = predicted - tp, positives - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        score = {
            "f1": 2 * tp / (2 * tp + fp + fn),
            "accuracy": (n - fp - fn) / n,
            "precision": tp / predicted,
            "recall": tp / positives,
        }[target]
    score = np.nan_to_num(score, nan=0.0, posinf=0.0)
    if target == "precision":  # precision on a handful of positives is noise
        score = np.where(predicted < max(10, 0.01 * n), -np.inf, score)
    if not len(candidates) or score.max() <= -1.0:
        return 0.5
    return float(candidates[int(np.argmax(score))])


def confusion(y: np.ndarray, label: np.ndarray, classes: list[str]) -> list[list[int]]:
    return skm.confusion_matrix(y, label, labels=classes).tolist()


def roc_points(y_pos: np.ndarray, proba: np.ndarray, n: int = 50) -> dict[str, list[float]]:
    """A thinned ROC curve (KFP's UI renders a few dozen points well)."""
    fpr, tpr, thr = skm.roc_curve(y_pos, proba)
    idx = np.unique(np.linspace(0, len(fpr) - 1, min(n, len(fpr))).astype(int))
    thr = np.clip(thr[idx], 0.0, 1.0)  # sklearn puts +inf first
    return {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist(), "threshold": thr.tolist()}
