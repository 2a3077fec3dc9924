"""``tabular-torch``: an MLP over per-column categorical embeddings and standardised
numerics, trained with AdamW and a cosine schedule, early stopping on validation in the
spec's metric, seeded and deterministic on CPU (CUDA when present).

Architecture: an embedding per categorical column (dimension ~ 1.6 * cardinality^0.56,
capped, the fastai rule of thumb), concatenated with the standardised numerics, then an
MLP of ``layers`` blocks (Linear -> SiLU -> Dropout) with a linear head. Regression
targets can be fitted as ``log1p``; binary classifiers get a decision threshold tuned on
validation. Files: weights as safetensors, architecture and preprocessing as JSON.

Train one model by hand::

    from driftloop.families import get_family
    family = get_family("tabular-torch")
    result = family.train(splits, spec, family.default_params())
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from driftloop.data import Splits
from driftloop.families.base import FittedModel, Prediction, TrainResult
from driftloop.families.tabular import TabularFamily, TabularModel
from driftloop.metrics import better, scores
from driftloop.preprocess import Columns, Preprocessor
from driftloop.spec import DatasetSpec

WEIGHTS, PREPROCESSOR, ARCH = "model.safetensors", "preprocessor.json", "architecture.json"


def device() -> torch.device:
    """CUDA when present; training is deterministic on CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Architecture:
    n_numeric: int
    cardinalities: list[int]
    embedding_dims: list[int]
    hidden: int
    layers: int
    dropout: float
    n_outputs: int


def embedding_dim(cardinality: int, cap: int = 16) -> int:
    return max(2, min(cap, round(1.6 * cardinality**0.56)))


class TabularNet(nn.Module):
    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(arch.cardinalities, arch.embedding_dims, strict=True)
        )
        width = arch.n_numeric + sum(arch.embedding_dims)
        blocks: list[nn.Module] = []
        for _ in range(arch.layers):
            blocks += [nn.Linear(width, arch.hidden), nn.SiLU(), nn.Dropout(arch.dropout)]
            width = arch.hidden
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, arch.n_outputs)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat(parts, dim=1)))


class InferenceNet:
    """``TabularNet`` in eval mode, folded for fast prediction, on the CPU.

    The first layer's input is [numerics, embedding_0[i_0], ..., embedding_k[i_k]], so
    its product with the first weight matrix W splits into ``numerics @ W_num`` plus, per
    categorical column, row i_j of ``embedding_j @ W_j``. Those rows are precomputed into
    one table, and the per-column lookups, the concatenation and the first matmul become
    one ``embedding_bag`` sum and one ``addmm``: ~4x fewer torch calls, which is what a
    one-row request pays for (29 us instead of 106 us on the bike model). Dropout is the
    identity in eval mode and is left out. The tensors are detached copies that never
    require grad, so no autograd mode is needed around the call. Equal to ``TabularNet``
    in exact arithmetic; in float32 they differ by rounding (~1e-7 relative).
    """

    @torch.no_grad()
    def __init__(self, net: TabularNet) -> None:
        def copy_(t: torch.Tensor) -> torch.Tensor:  # detached, on the CPU, owning its memory
            return t.detach().cpu().clone(memory_format=torch.contiguous_format)

        linears = [m for m in net.body if isinstance(m, nn.Linear)] + [net.head]
        embeddings = cast(list[nn.Embedding], list(net.embeddings))
        first = linears[0]
        n_num = first.in_features - sum(e.embedding_dim for e in embeddings)
        w = first.weight  # [out, n_num + sum(embedding dims)]
        self.w_num, self.bias = copy_(w[:, :n_num].T), copy_(first.bias)
        tables, offsets, col, row = [], [], n_num, 0
        for emb in embeddings:
            tables.append(copy_(emb.weight @ w[:, col : col + emb.embedding_dim].T))
            offsets.append(row)
            col, row = col + emb.embedding_dim, row + emb.num_embeddings
        self.table = torch.cat(tables) if tables else None
        self.offsets = torch.tensor(offsets, dtype=torch.int64)
        # The remaining layers: (weight^T, bias, SiLU after?) - every one but the head.
        self.rest = [(copy_(m.weight.T), copy_(m.bias), m is not net.head) for m in linears[1:]]
        self.first_act = first is not net.head

    def __call__(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        h = torch.addmm(self.bias, x_num, self.w_num)
        if self.table is not None:
            h = h + F.embedding_bag(x_cat + self.offsets, self.table, mode="sum")
        if self.first_act:
            h = F.silu(h)
        for w, b, act in self.rest:
            h = torch.addmm(b, h, w)
            if act:
                h = F.silu(h)
        return h


class TabularTorchModel(TabularModel):
    """A fitted preprocessor and network; predicts from rows of raw features.

    The network is folded for prediction (``InferenceNet``) when the model is built: a
    model is a snapshot of the weights; build a new one after changing them."""

    family = "tabular-torch"

    def __init__(self, pre: Preprocessor, net: TabularNet, arch: Architecture) -> None:
        self.pre, self.net, self.arch = pre, net.eval(), arch
        self.inference_net = InferenceNet(self.net)

    def raw_output(self, columns: Columns, batch: int = 65536) -> np.ndarray:
        x_num, x_cat = self.pre.transform(columns)
        outs = []
        for i in range(0, len(x_num), batch):
            out = self.inference_net(
                torch.from_numpy(x_num[i : i + batch]), torch.from_numpy(x_cat[i : i + batch])
            )
            outs.append(out.numpy())
        return np.concatenate(outs) if outs else np.empty((0, self.arch.n_outputs), np.float32)

    def predict(self, inputs: Columns) -> Prediction:
        out = self.raw_output(inputs)
        if self.pre.task == "regression":
            return {"value": self.pre.decode_regression(out[:, 0])}
        if self.pre.task == "binary":
            return self.labelled(1.0 / (1.0 + np.exp(-out[:, 0].astype("float64"))))
        z = out.astype("float64") - out.max(axis=1, keepdims=True)
        return self.labelled(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        (directory / PREPROCESSOR).write_text(self.pre.to_json())
        (directory / ARCH).write_text(json.dumps(asdict(self.arch), indent=2))


# A warm start fine-tunes at a quarter of the trial's learning rate: the weights are
# already near a good solution, and the full rate undoes what they knew in a few epochs.
FINE_TUNE_LR = 0.25


class TabularTorch(TabularFamily):
    name = "tabular-torch"
    files = (WEIGHTS, PREPROCESSOR, ARCH)
    search_space: ClassVar[dict[str, list[Any]]] = {
        "hidden": [128, 256, 512],
        "layers": [2, 3, 4],
        "dropout": [0.0, 0.1, 0.2],
        "lr": [1e-3, 2e-3, 4e-3],
        "weight_decay": [0.0, 1e-4, 1e-3],
        "batch_size": [128, 256, 512],
    }

    def default_params(self) -> dict[str, Any]:
        return {
            "hidden": 256,
            "layers": 3,
            "dropout": 0.1,
            "lr": 2e-3,
            "weight_decay": 1e-4,
            "batch_size": 256,
            "max_epochs": 60,  # early stopping usually ends training well before
            "patience": 8,  # epochs without validation improvement before stopping
            "seed": 0,
        }

    def load(self, directory: Path) -> TabularTorchModel:
        arch = Architecture(**json.loads((directory / ARCH).read_text()))
        net = TabularNet(arch)
        net.load_state_dict(load_file(str(directory / WEIGHTS)))
        pre = Preprocessor.from_json((directory / PREPROCESSOR).read_text())
        return TabularTorchModel(pre, net, arch)

    def train(self, splits: Splits, spec: DatasetSpec, params: dict[str, Any]) -> TrainResult:
        self.check_task(spec)
        hp = self.parse_params(params)
        model, best_epoch = self._fit(splits.train, spec, hp, validation=splits.validation)
        val = scores(model.predict(splits.validation), splits.validation, spec)
        return TrainResult(model, val, best_epoch, hp)

    def refit(
        self,
        selected: FittedModel,
        data: pd.DataFrame,
        spec: DatasetSpec,
        params: dict[str, Any],
        epochs: int | None,
    ) -> TabularTorchModel:
        hp = self.parse_params(params)
        model, _ = self._fit(data, spec, hp, epochs=max(1, epochs or hp["max_epochs"]))
        if spec.task == "binary":  # tuned on validation during selection; nothing is held out now
            model.pre.threshold = cast(TabularTorchModel, selected).pre.threshold
        return model

    def fine_tune(
        self, start: FittedModel, splits: Splits, spec: DatasetSpec, params: dict[str, Any]
    ) -> TrainResult:
        self.check_task(spec)
        hp = self.parse_params(params)
        warm = cast(TabularTorchModel, start)
        model, best_epoch = self._fit(splits.train, spec, hp, splits.validation, start=warm)
        val = scores(model.predict(splits.validation), splits.validation, spec)
        return TrainResult(model, val, best_epoch, hp)

    def refit_from(
        self,
        start: FittedModel,
        selected: FittedModel,
        data: pd.DataFrame,
        spec: DatasetSpec,
        params: dict[str, Any],
        epochs: int | None,
    ) -> TabularTorchModel:
        hp = self.parse_params(params)
        warm = cast(TabularTorchModel, start)
        model, _ = self._fit(data, spec, hp, epochs=max(1, epochs or 1), start=warm)
        if spec.task == "binary":
            model.pre.threshold = cast(TabularTorchModel, selected).pre.threshold
        return model

    def _fit(
        self,
        train: pd.DataFrame,
        spec: DatasetSpec,
        hp: dict[str, Any],
        validation: pd.DataFrame | None = None,
        epochs: int | None = None,
        start: TabularTorchModel | None = None,
    ) -> tuple[TabularTorchModel, int]:
        """Train on ``train``: with ``validation``, keep the best epoch's weights and stop
        after ``patience`` epochs without improvement; without it (a refit), exactly
        ``epochs`` epochs on the same learning-rate schedule. From ``start`` (a warm start):
        its preprocessor (its embeddings index its vocabularies), architecture and weights,
        at ``FINE_TUNE_LR`` of the learning rate."""
        # 1. Determinism: same data + params + seed -> same weights, on CPU.
        torch.manual_seed(hp["seed"])
        torch.use_deterministic_algorithms(True)
        gen = torch.Generator().manual_seed(hp["seed"])
        dev = device()

        # 2. Preprocess with statistics of the training rows only (or the start's).
        pre = Preprocessor.fit(train, spec) if start is None else copy.deepcopy(start.pre)
        x_num, x_cat = (torch.from_numpy(a).to(dev) for a in pre.transform(train))
        y = torch.from_numpy(pre.encode_target(train[spec.target])).to(dev)
        n_out = 1 if spec.task in ("regression", "binary") else len(pre.classes)
        arch = (
            start.arch
            if start is not None
            else Architecture(
                n_numeric=x_num.shape[1],
                cardinalities=pre.cardinalities,
                embedding_dims=[embedding_dim(c) for c in pre.cardinalities],
                hidden=hp["hidden"],
                layers=hp["layers"],
                dropout=hp["dropout"],
                n_outputs=n_out,
            )
        )
        net = TabularNet(arch).to(dev)
        lr = hp["lr"]
        if start is not None:
            net.load_state_dict(start.net.state_dict())
            lr *= FINE_TUNE_LR
        loss_fn: nn.Module = {
            "regression": nn.MSELoss(),
            "binary": nn.BCEWithLogitsLoss(),
            "multiclass": nn.CrossEntropyLoss(),
        }[spec.task]
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=hp["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp["max_epochs"])

        # 3. Mini-batch epochs; after each, score validation in the spec's metric and keep
        #    the best weights; stop after `patience` epochs without improvement.
        best_state, best_score, best_epoch = None, None, 0
        n = len(y)
        for epoch in range(1, (epochs or hp["max_epochs"]) + 1):
            net.train()
            for idx in torch.randperm(n, generator=gen).split(hp["batch_size"]):
                idx = idx.to(dev)
                out = net(x_num[idx], x_cat[idx])
                target = y[idx].float().unsqueeze(1) if n_out == 1 else y[idx]
                loss = loss_fn(out, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
            if validation is None:
                continue
            model = TabularTorchModel(pre, net, arch)  # a snapshot of this epoch's weights
            if spec.task == "binary":
                model.tune_threshold(validation, spec)
            score = scores(model.predict(validation), validation, spec)[spec.metric]
            if best_score is None or better(spec.metric, score, best_score):
                best_state, best_score, best_epoch = copy.deepcopy(net.state_dict()), score, epoch
            elif epoch - best_epoch >= hp["patience"]:
                break
        if validation is None:
            return TabularTorchModel(pre, net, arch), epochs or hp["max_epochs"]
        assert best_state is not None
        net.load_state_dict(best_state)
        model = TabularTorchModel(pre, net, arch)

        # 4. Binary: tune the decision threshold on validation for the spec's metric.
        if spec.task == "binary":
            model.tune_threshold(validation, spec)
        return model, best_epoch


FAMILY = TabularTorch()
