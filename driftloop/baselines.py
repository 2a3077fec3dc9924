"""The references every training run is compared with, on the same features and window: a
dumb model (the training mean, or the class prior) and scikit-learn's HistGradientBoosting
(tabular data; other data kinds bring their own, ``driftloop.datakinds``).
They are evidence for the model card and the gate; they are never served.
"""

from __future__ import annotations

import numpy as np

from driftloop.data import Splits
from driftloop.families.tabular import design_matrix
from driftloop.metrics import classification_metrics, regression_metrics, tune_threshold
from driftloop.preprocess import Preprocessor
from driftloop.spec import DatasetSpec


def baselines(splits: Splits, spec: DatasetSpec) -> dict[str, dict[str, float]]:
    """The references of the spec's data kind (``driftloop.datakinds``)."""
    from driftloop.datakinds import get_kind

    return get_kind(spec.kind).baselines(splits, spec)


def tabular_baselines(splits: Splits, spec: DatasetSpec) -> dict[str, dict[str, float]]:
    """Test-window metrics of the dumb model and of HistGradientBoosting (same features)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    pre = Preprocessor.fit(splits.train, spec)
    cat_mask = [False] * len(pre.numeric) + [True] * len(pre.categories)
    x_tr, x_te = design_matrix(pre, splits.train), design_matrix(pre, splits.test)
    y_tr = splits.train[spec.target].to_numpy()
    y_te = splits.test[spec.target].to_numpy()
    out = {}
    if spec.task == "regression":
        t_tr = np.log1p(y_tr) if spec.log_target else y_tr
        for name, est in (
            ("dumb", DummyRegressor()),
            ("gbm", HistGradientBoostingRegressor(categorical_features=cat_mask, random_state=0)),
        ):
            p = est.fit(x_tr, t_tr).predict(x_te)
            out[name] = regression_metrics(
                y_te.astype("float64"), np.expm1(p) if spec.log_target else p
            )
        return out
    y_tr, y_te = y_tr.astype(str), y_te.astype(str)
    x_va = design_matrix(pre, splits.validation)
    y_va_pos = (splits.validation[spec.target].astype(str) == spec.positive_label).to_numpy()
    for name, est in (
        ("dumb", DummyClassifier(strategy="prior")),
        ("gbm", HistGradientBoostingClassifier(categorical_features=cat_mask, random_state=0)),
    ):
        est.fit(x_tr, y_tr)
        if spec.task == "binary":
            pos = list(est.classes_).index(spec.positive_label)
            t = tune_threshold(y_va_pos.astype(int), est.predict_proba(x_va)[:, pos], spec.metric)
            p = est.predict_proba(x_te)[:, pos]
            neg = next(c for c in est.classes_ if c != spec.positive_label)
            label = np.asarray(np.where(p >= t, spec.positive_label, neg))
            out[name] = classification_metrics(y_te, label, p, spec.positive_label)
        else:
            out[name] = classification_metrics(y_te, np.asarray(est.predict(x_te)), None, None)
    return out
