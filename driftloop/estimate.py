"""Label-free performance estimation: how well is the model doing on traffic whose labels
have not arrived yet?

Two estimators, the methods of NannyML (Apache-2.0), written here rather than taken from
the library: nannyml 0.13.1 pulls xgboost (and with it the CUDA NCCL wheel), kaleido,
FLAML, gcsfs, s3fs and a usage-analytics client, pins lightgbm below 4.6, and would
downgrade boto3 — too heavy for a model server's image, for two short algorithms.
Checked against NannyML 0.13.1 by ``tests/driftloop/test_estimate_nannyml.py``, on the
shared example in ``tests/driftloop/fixtures/nannyml_reference.json`` (written by
``tools/nannyml_reference.py`` in a scratch venv): CBPE's accuracy, precision, recall, F1
and ROC-AUC within 1e-6 absolute (measured: 2e-8, ROC-AUC, from NannyML rounding its
cumulative counts), DLE's RMSE and MAE within 2 % relative (measured: under 0.9 %; the
trees see standardised numerics and ordinal categories, NannyML's raw numerics and
declared categoricals, and LightGBM's bins are not shift-invariant).

- **CBPE** (binary classification, confidence-based): calibrated probabilities are the
  expected labels. A probability calibrator (isotonic regression, as NannyML) is fitted
  on reference data the model did not train on, when NannyML's test says it helps
  (``needs_calibration``; otherwise the scores are taken as they are); per window the
  expected confusion matrix is ``TP = sum p_i [pred_i = 1]``, ``FP = sum (1 - p_i)
  [pred_i = 1]``, and so on, giving
  expected accuracy, precision, recall and F1; the expected ROC curve accumulates p_i as
  positives and 1 - p_i as negatives in score order, and its area is the expected ROC-AUC.
- **DLE** (regression, direct loss estimation): a LightGBM model learns the model's
  squared and absolute error from its inputs and prediction on the reference data; per
  window the estimated RMSE is the root of the mean predicted squared error, the MAE the
  mean predicted absolute error.

Both assume what NannyML assumes: the relation between inputs and target has not changed
(covariate shift only). Concept drift is caught by the delayed labels, not by these.

Fitted at registration (``fit``) on the test window with the gated model, saved in the
version (``reference/estimator.json``, DLE's trees as LightGBM's native text); used per
window by the drift job (``Estimator.estimate``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.errors import DataError
from driftloop.families import FittedModel
from driftloop.families.tabular_lgbm import matrix, ordinal_codes
from driftloop.preprocess import Preprocessor
from driftloop.spec import DatasetSpec

ESTIMATOR = "reference/estimator.json"
SQUARED, ABSOLUTE = "reference/dle_squared.txt", "reference/dle_absolute.txt"
MIN_ROWS = 50  # fewer labelled reference rows than this cannot calibrate anything


# -- CBPE ---------------------------------------------------------------------------------
IDENTITY = ([0.0, 1.0], [0.0, 1.0])  # knots that leave a probability as it is


def calibrate(proba: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """The (score, probability) knots to interpolate between: isotonic regression of
    P(positive) on the reference, as NannyML's default calibrator, or the identity when
    calibration would not help (``needs_calibration``, as NannyML decides it). Raises
    DataError for inputs that cannot be calibrated: no rows, NaN, one class only."""
    from sklearn.isotonic import IsotonicRegression

    proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(proba) != len(y) or not len(y):
        raise DataError(f"calibration needs scores and labels alike: {len(proba)} vs {len(y)}")
    if not (np.isfinite(proba).all() and np.isfinite(y).all()):
        raise DataError("calibration scores or labels contain NaN or inf")
    if y.min() == y.max():
        raise DataError("calibration needs both classes in the reference labels")
    if not needs_calibration(proba, y):
        return IDENTITY[0].copy(), IDENTITY[1].copy()
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(proba, y)
    return iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()


def needs_calibration(proba: np.ndarray, y: np.ndarray, bins: int = 10, splits: int = 10) -> bool:
    """Whether isotonic calibration lowers the expected calibration error, NannyML's test
    (``nannyml.calibration.needs_calibration``): over 10 stratified 90/10 splits (seed 42)
    fit on 90 %, and compare the ECE of the pooled held-out 10 % before and after. Scores
    that are calibrated already only gain the step function's noise from a refit. Scores
    that rank almost perfectly (ROC-AUC > 0.999) are left alone, as there."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit

    if len(np.unique(y)) == 1 or roc_auc_score(y, proba) > 0.999:
        return False
    sss = StratifiedShuffleSplit(n_splits=splits, test_size=0.1, random_state=42)
    try:
        folds = list(sss.split(proba, y))
    except ValueError as e:  # a class too rare to put in every fold's train and test part
        raise DataError(f"too few reference rows of each class to calibrate: {e}") from e
    truth, before, after = [], [], []
    for train, test in folds:
        iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(proba[train], y[train])
        truth.append(y[test])
        before.append(proba[test])
        after.append(iso.predict(proba[test]))
    t = np.concatenate(truth)
    edges = _bin_edges(len(t), bins)
    return _ece(t, np.concatenate(before), edges) > _ece(t, np.concatenate(after), edges)


def _bin_edges(n: int, bins: int) -> list[tuple[int, int]]:
    """Equal-count bins over n sorted rows, the last one taking the remainder."""
    if n <= 2 * bins:
        bins = n // 2
        if bins < 2:
            raise DataError(f"{n} held-out rows cannot make two calibration bins")
    edges = np.asarray(range(0, n + 1, n // bins))
    edges[-1] = n
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _ece(y: np.ndarray, proba: np.ndarray, edges: list[tuple[int, int]]) -> float:
    """Expected calibration error over equal-count bins of the rows in score order. The
    sort is NumPy's default (not stable), as NannyML's: with tied scores at a bin edge the
    order decides which bin a label falls in, and matching theirs matches the decision."""
    order = proba.argsort()
    p, t = proba[order], y[order]
    return float(np.sum([(b - a) / len(p) * abs(p[a:b].mean() - t[a:b].mean()) for a, b in edges]))


def expected_metrics(p: np.ndarray, predicted: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Expected accuracy, precision, recall, F1 and ROC-AUC from calibrated P(y=1) ``p``,
    the served labels ``predicted`` (0/1) and the model's scores ``score``. No rows: every
    metric NaN (as NannyML's estimate on an empty chunk). No predicted positives: precision
    and F1 0 (as NannyML), recall 0 when no positive is expected."""
    if not len(p):
        return dict.fromkeys(["accuracy", "precision", "recall", "f1", "roc_auc"], float("nan"))
    pos = predicted.astype(bool)
    tp, fp = float(p[pos].sum()), float((1 - p[pos]).sum())
    fn, tn = float(p[~pos].sum()), float((1 - p[~pos]).sum())
    n = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {
        "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": expected_roc_auc(p, score),
    }


def expected_roc_auc(p: np.ndarray, score: np.ndarray) -> float:
    """The area under the expected ROC curve: rows in descending score order, each adding
    p to the expected true positives and 1 - p to the expected false positives."""
    if not len(score):
        return float("nan")
    order = np.argsort(-score, kind="stable")
    s, q = score[order], p[order]
    # Rows with equal scores move the curve together (one diagonal step), as roc_curve does.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps, fps = np.cumsum(q)[last], np.cumsum(1 - q)[last]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return float("nan")
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr))


# -- DLE ----------------------------------------------------------------------------------
Codes = dict[str, list[int] | str]


def _dle_features(pre: Preprocessor, codes: Codes, rows: Any, pred: np.ndarray) -> np.ndarray:
    return np.hstack([matrix(pre, codes, rows), pred.reshape(-1, 1)])


# NannyML's DLE uses LGBMRegressor's defaults (31 leaves, learning rate 0.1, 100 rounds);
# these trade rate for rounds, one thread, deterministic. The fixture test checks both.
DLE_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "num_leaves": 15,
    "learning_rate": 0.05,
    "min_child_samples": 20,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "seed": 0,
    "verbose": -1,
}
DLE_ROUNDS = 200


def _dle_fit(x: np.ndarray, target: np.ndarray) -> Any:
    import lightgbm as lgb

    return lgb.train(DLE_PARAMS, lgb.Dataset(x, target), num_boost_round=DLE_ROUNDS)


# -- fitted estimator ------------------------------------------------------------------------
@dataclass
class Estimator:
    """A fitted estimator for one version; ``estimate`` on a window's logged rows."""

    task: str
    metrics: list[str]
    threshold: float = 0.5
    # The estimate on traffic like the training data (the version's reference sample):
    # what a window's estimate is compared with. The test window's realised metrics are
    # the wrong yardstick for an estimate: on seasonal data they hold one season's error.
    baseline: dict[str, float] | None = None
    knots: tuple[list[float], list[float]] | None = None  # CBPE calibration
    pre: Preprocessor | None = None  # DLE's input preprocessing (the reference's)
    codes: Codes | None = None
    squared: Any = None  # DLE boosters
    absolute: Any = None

    def estimate(self, rows: Any, prediction: np.ndarray) -> dict[str, float]:
        """Estimated metrics for rows (features) whose ``prediction`` is what was served:
        the value (regression) or P(positive) (binary).

        Rows whose prediction is NaN (or inf) are left out, as NannyML's CBPE leaves them
        out (its DLE would hand them to the trees: a loss estimated for a prediction that
        is not there means nothing); a window with no row left (or none at all) estimates
        every metric as NaN."""
        prediction = np.asarray(prediction, dtype=np.float64).reshape(-1)
        keep = np.isfinite(prediction)
        if self.task == "binary":
            assert self.knots is not None
            served = prediction[keep]
            p = np.interp(served, *self.knots)
            return expected_metrics(p, (served >= self.threshold).astype(int), served)
        assert self.pre is not None and self.codes is not None
        if not keep.any():
            return {"rmse": float("nan"), "mae": float("nan")}
        x = _dle_features(self.pre, self.codes, rows, prediction)[keep]
        sq = np.clip(self.squared.predict(x), 0.0, None)
        ab = np.clip(self.absolute.predict(x), 0.0, None)
        return {"rmse": float(np.sqrt(sq.mean())), "mae": float(ab.mean())}

    def save(self, directory: Path) -> None:
        (directory / ESTIMATOR).parent.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "task": self.task,
            "metrics": self.metrics,
            "threshold": self.threshold,
            "baseline": self.baseline,
        }
        if self.knots is not None:
            doc["knots"] = list(self.knots)
        if self.pre is not None:
            doc["preprocessor"] = json.loads(self.pre.to_json())
            doc["codes"] = self.codes
            self.squared.save_model(str(directory / SQUARED))
            self.absolute.save_model(str(directory / ABSOLUTE))
        (directory / ESTIMATOR).write_text(json.dumps(doc))

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> Estimator:
        """From the version's files (``ESTIMATOR`` and, for DLE, the two boosters)."""
        import lightgbm as lgb

        doc = json.loads(files[ESTIMATOR])
        est = cls(doc["task"], doc["metrics"], doc.get("threshold", 0.5), doc.get("baseline"))
        if "knots" in doc:
            est.knots = (doc["knots"][0], doc["knots"][1])
        if "preprocessor" in doc:
            est.pre = Preprocessor.from_json(json.dumps(doc["preprocessor"]))
            est.codes = doc["codes"]
            est.squared = lgb.Booster(model_str=files[SQUARED].decode())
            est.absolute = lgb.Booster(model_str=files[ABSOLUTE].decode())
        return est


def fit(
    model: FittedModel,
    reference: pd.DataFrame,
    spec: DatasetSpec,
    typical: pd.DataFrame | None = None,
) -> Estimator | None:
    """The estimator for ``model``, fitted on labelled ``reference`` rows it did not train
    on (the test window), with its ``baseline`` estimated on ``typical`` rows (the
    version's drift reference: traffic like the training data); None for tasks it does not
    cover or too few rows."""
    est = _fit(model, reference, spec)
    if est is not None and typical is not None and len(typical):
        predicted = model.predict(typical)
        served = predicted["value"] if spec.task == "regression" else predicted["probability"]
        est.baseline = est.estimate(typical, served)
    return est


def _fit(model: FittedModel, reference: pd.DataFrame, spec: DatasetSpec) -> Estimator | None:
    if spec.task not in ("binary", "regression") or len(reference) < MIN_ROWS:
        return None
    pred = model.predict(reference)
    if spec.task == "binary":
        proba = np.asarray(pred["probability"], dtype=np.float64)
        labelled = reference[spec.target].notna().to_numpy() & np.isfinite(proba)
        y = (reference[spec.target].astype(str) == spec.positive_label).to_numpy().astype(float)
        proba, y = proba[labelled], y[labelled]
        if len(y) < MIN_ROWS or y.min() == y.max():
            return None  # too few rows, or one class: nothing to calibrate against
        try:
            knots = calibrate(proba, y)
        except DataError:
            return None  # a class too rare to calibrate on: no estimate beats a wild one
        threshold = float(getattr(getattr(model, "pre", None), "threshold", 0.5))
        return Estimator(
            "binary", ["accuracy", "precision", "recall", "f1", "roc_auc"], threshold, knots=knots
        )
    value = np.asarray(pred["value"], dtype=np.float64)
    error = reference[spec.target].to_numpy(dtype=np.float64) - value
    labelled = np.isfinite(error)  # a missing target or a NaN prediction teaches nothing
    if labelled.sum() < MIN_ROWS:
        return None
    if not labelled.all():
        reference, value, error = reference[labelled], value[labelled], error[labelled]
    pre = Preprocessor.fit(reference, spec)
    codes = ordinal_codes(pre.categories)
    x = _dle_features(pre, codes, reference, value)
    return Estimator(
        "regression",
        ["rmse", "mae"],
        pre=pre,
        codes=codes,
        squared=_dle_fit(x, error**2),
        absolute=_dle_fit(x, np.abs(error)),
    )
