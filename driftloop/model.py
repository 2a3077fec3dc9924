"""The torch model for tabular data, and ``TabularModel``: preprocessing + network.

``TabularModel.predict(frame)`` is the one prediction path: evaluation in the pipeline,
the benchmarks and the KServe predictor all call it, so served predictions equal offline
predictions for the same rows. Weights are saved as safetensors; the architecture and
the preprocessing as JSON. Nothing is pickled.

Architecture: an embedding per categorical column (dimension ~ 1.6 * cardinality^0.56,
capped, the fastai rule of thumb), concatenated with the standardised numerics, then an
MLP of ``layers`` blocks (Linear -> SiLU -> Dropout) with a linear head.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from driftloop.preprocess import Preprocessor

WEIGHTS, PREPROCESSOR, ARCH = "model.safetensors", "preprocessor.json", "architecture.json"


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


class TabularModel:
    """A fitted preprocessor and network; predicts from a DataFrame of raw features."""

    def __init__(self, pre: Preprocessor, net: TabularNet, arch: Architecture) -> None:
        self.pre, self.net, self.arch = pre, net.eval(), arch

    @property
    def features(self) -> list[str]:
        return [*self.pre.numeric, *self.pre.categories]

    @torch.inference_mode()
    def raw_output(self, df: pd.DataFrame, batch: int = 65536) -> np.ndarray:
        x_num, x_cat = self.pre.transform(df)
        outs = []
        for i in range(0, len(df), batch):
            out = self.net(
                torch.from_numpy(x_num[i : i + batch]), torch.from_numpy(x_cat[i : i + batch])
            )
            outs.append(out.numpy())
        return np.concatenate(outs) if outs else np.empty((0, self.arch.n_outputs), np.float32)

    def predict(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Regression: {"value"}. Binary: {"probability" of the positive class, "label"}.
        Multiclass: {"probabilities" [n, k], "probability" of the chosen class, "label"}."""
        out = self.raw_output(df)
        if self.pre.task == "regression":
            return {"value": self.pre.decode_regression(out[:, 0])}
        classes = np.asarray(self.pre.classes, dtype=object)
        if self.pre.task == "binary":
            p = 1.0 / (1.0 + np.exp(-out[:, 0].astype("float64")))
            return {"probability": p, "label": classes[(p >= self.pre.threshold).astype(int)]}
        z = out.astype("float64") - out.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        k = probs.argmax(axis=1)
        return {
            "probabilities": probs,
            "probability": probs[np.arange(len(k)), k],
            "label": classes[k],
        }

    # -- files -----------------------------------------------------------------------
    def save(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        (directory / PREPROCESSOR).write_text(self.pre.to_json())
        (directory / ARCH).write_text(json.dumps(asdict(self.arch), indent=2))
        return [directory / WEIGHTS, directory / PREPROCESSOR, directory / ARCH]

    @classmethod
    def load(cls, directory: Path) -> TabularModel:
        arch = Architecture(**json.loads((directory / ARCH).read_text()))
        net = TabularNet(arch)
        net.load_state_dict(load_file(str(directory / WEIGHTS)))
        return cls(Preprocessor.from_json((directory / PREPROCESSOR).read_text()), net, arch)
