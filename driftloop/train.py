"""Training: the torch model (seeded, deterministic on CPU, early stopping on validation)
and the baselines every run is compared with (a dumb mean/majority model and scikit-learn's
HistGradientBoosting on the same features and window).

Run one trial by hand::

    python -c "from driftloop.train import *; ..."   # or: driftloop pipeline run --local
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from driftloop.data import Splits
from driftloop.metrics import better, classification_metrics, regression_metrics, tune_threshold
from driftloop.model import Architecture, TabularModel, TabularNet, embedding_dim
from driftloop.preprocess import Preprocessor
from driftloop.spec import DatasetSpec


@dataclass(frozen=True)
class HParams:
    """One point of the search space. Defaults are a sound single trial."""

    hidden: int = 256
    layers: int = 3
    dropout: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 60  # early stopping usually ends training well before
    patience: int = 8  # epochs without validation improvement before stopping
    seed: int = 0

    @classmethod
    def parse(cls, d: dict) -> HParams:
        """From a dict that crossed KFP (protobuf Struct numbers are all floats)."""
        from dataclasses import fields

        from driftloop.errors import ConfigError

        known = {f.name: f.type for f in fields(cls)}
        if unknown := set(d) - set(known):
            raise ConfigError(
                f"unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        values: dict[str, Any] = {
            k: int(v) if known[k] in ("int", int) else float(v) for k, v in d.items()
        }
        return cls(**values)


# The declared search space: random search draws from these.
SEARCH_SPACE: dict[str, list] = {
    "hidden": [128, 256, 512],
    "layers": [2, 3, 4],
    "dropout": [0.0, 0.1, 0.2],
    "lr": [1e-3, 2e-3, 4e-3],
    "weight_decay": [0.0, 1e-4, 1e-3],
    "batch_size": [128, 256, 512],
}


def sample_trials(n: int, seed: int = 0) -> list[dict]:
    """``n`` hyperparameter sets; the first is always the defaults (a known-good anchor)."""
    rng = np.random.default_rng(seed)
    trials = [asdict(HParams(seed=seed))]
    while len(trials) < n:
        t = {k: v[int(rng.integers(len(v)))] for k, v in SEARCH_SPACE.items()}
        trials.append(asdict(HParams(**t, seed=seed + len(trials))))
    return trials[:n]


@dataclass
class TrainResult:
    model: TabularModel
    val_metrics: dict[str, float]
    epochs: int
    params: dict


def evaluate(model: TabularModel, df: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    return scores(model.predict(df), df, spec)


def scores(pred: dict[str, np.ndarray], df: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """The spec's task metrics of ``TabularModel.predict`` output against ``df``'s target."""
    y = df[spec.target].to_numpy()
    if spec.task == "regression":
        return regression_metrics(y.astype("float64"), pred["value"])
    return classification_metrics(
        y.astype(str),
        pred["label"],
        pred.get("probability") if spec.task == "binary" else None,
        spec.positive_label,
    )


def train_model(splits: Splits, spec: DatasetSpec, params: dict) -> TrainResult:
    hp = HParams.parse(params)
    # 1. Determinism: same data + params + seed -> same weights, on CPU.
    torch.manual_seed(hp.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(hp.seed)

    # 2. Preprocess with statistics of the training split only.
    pre = Preprocessor.fit(splits.train, spec)
    x_num, x_cat = (torch.from_numpy(a) for a in pre.transform(splits.train))
    y = torch.from_numpy(pre.encode_target(splits.train[spec.target]))
    n_out = 1 if spec.task in ("regression", "binary") else len(pre.classes)
    arch = Architecture(
        n_numeric=x_num.shape[1],
        cardinalities=pre.cardinalities,
        embedding_dims=[embedding_dim(c) for c in pre.cardinalities],
        hidden=hp.hidden,
        layers=hp.layers,
        dropout=hp.dropout,
        n_outputs=n_out,
    )
    net = TabularNet(arch)
    loss_fn: nn.Module = {
        "regression": nn.MSELoss(),
        "binary": nn.BCEWithLogitsLoss(),
        "multiclass": nn.CrossEntropyLoss(),
    }[spec.task]
    opt = torch.optim.AdamW(net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.max_epochs)

    # 3. Mini-batch epochs; after each, score validation in the spec's metric and keep
    #    the best weights; stop after `patience` epochs without improvement.
    best_state, best_score, best_epoch, epoch = None, None, 0, 0
    n = len(y)
    for epoch in range(1, hp.max_epochs + 1):
        net.train()
        for idx in torch.randperm(n, generator=gen).split(hp.batch_size):
            out = net(x_num[idx], x_cat[idx])
            target = y[idx].float().unsqueeze(1) if n_out == 1 else y[idx]
            loss = loss_fn(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        model = TabularModel(pre, net, arch)  # a snapshot of this epoch's weights
        if spec.task == "binary":
            _tune(model, splits.validation, spec)
        score = evaluate(model, splits.validation, spec)[spec.metric]
        if best_score is None or better(spec.metric, score, best_score):
            best_state, best_score, best_epoch = copy.deepcopy(net.state_dict()), score, epoch
        elif epoch - best_epoch >= hp.patience:
            break
    assert best_state is not None
    net.load_state_dict(best_state)
    model = TabularModel(pre, net, arch)

    # 4. Binary: tune the decision threshold on validation for the spec's metric.
    if spec.task == "binary":
        _tune(model, splits.validation, spec)
    return TrainResult(model, evaluate(model, splits.validation, spec), best_epoch, asdict(hp))


def _tune(model: TabularModel, val: pd.DataFrame, spec: DatasetSpec) -> None:
    p = model.predict(val)["probability"]
    y_pos = (val[spec.target].astype(str) == spec.positive_label).to_numpy().astype(int)
    model.pre.threshold = tune_threshold(y_pos, p, spec.metric)


# -- baselines ---------------------------------------------------------------------------
def baselines(splits: Splits, spec: DatasetSpec) -> dict[str, dict[str, float]]:
    """Test-window metrics of the dumb model and of HistGradientBoosting (same features)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    pre = Preprocessor.fit(splits.train, spec)

    def features(df: pd.DataFrame) -> np.ndarray:
        x_num, x_cat = pre.transform(df)
        return np.hstack([x_num, x_cat.astype(np.float32)])

    n_num = len(pre.numeric)
    cat_mask = [False] * n_num + [True] * len(pre.categories)
    x_tr, x_te = features(splits.train), features(splits.test)
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
    x_va = features(splits.validation)
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
