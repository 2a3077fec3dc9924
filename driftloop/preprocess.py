"""Preprocessing fitted on the training split only, saved as JSON (never pickle).

Numeric: median imputation, then standardisation. Categorical: each value seen in
training gets an index >= 1; index 0 is the unknown/missing bucket (or, with
``unknown_category: reject``, the server refuses such a request). Regression targets
may be log1p-transformed, then standardised; the model learns in that space.
The same ``Preprocessor`` transforms rows at training, evaluation and serving time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from driftloop.spec import DatasetSpec

Z_CLIP = 10.0

# A DataFrame, or any mapping of feature name -> 1-D values (numpy array, list, Series).
Columns: TypeAlias = pd.DataFrame | Mapping[str, Any]


@dataclass
class NumericStats:
    median: float
    mean: float
    std: float


@dataclass
class Preprocessor:
    task: str
    numeric: dict[str, NumericStats]
    categories: dict[str, list[str]]  # index 0 is reserved for unknown/missing
    target: str
    log_target: bool = False
    target_mean: float = 0.0
    target_std: float = 1.0
    classes: list[str] = field(default_factory=list)  # classification; binary: [neg, pos]
    threshold: float = 0.5  # binary decision threshold on P(positive), tuned on validation
    unknown_category: str = "bucket"

    # -- fitting -------------------------------------------------------------------
    @classmethod
    def fit(cls, train: pd.DataFrame, spec: DatasetSpec) -> Preprocessor:
        numeric = {}
        for c in spec.numeric:
            col = train[c].astype("float64")
            median = float(col.median()) if col.notna().any() else 0.0
            filled = col.fillna(median)
            std = float(filled.std(ddof=0))
            mean = float(filled.mean())
            # A relative floor: a column constant in this window up to float noise (bank's
            # nr.employed over six months: std 1.8e-12) must not blow up into z = 1e13.
            floor = 1e-9 * max(1.0, abs(mean))
            numeric[c] = NumericStats(median, mean, std if std > floor else 1.0)
        categories = {
            c: sorted(str(v) for v in train[c].dropna().unique()) for c in spec.categorical
        }
        pre = cls(
            task=spec.task,
            numeric=numeric,
            categories=categories,
            target=spec.target,
            log_target=spec.log_target,
            unknown_category=spec.unknown_category,
        )
        y = train[spec.target]
        if spec.task == "regression":
            t = pre._forward_target(y.to_numpy(dtype="float64"))
            pre.target_mean, pre.target_std = float(t.mean()), float(t.std() or 1.0)
        else:
            labels = sorted(str(v) for v in y.dropna().unique())
            if spec.task == "binary":
                pos = str(spec.positive_label)
                labels = [next(v for v in labels if v != pos), pos] if len(labels) == 2 else labels
            pre.classes = labels
        return pre

    # -- features ------------------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        return [len(v) + 1 for v in self.categories.values()]

    def transform(self, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        """(numeric float32 [n, n_num], categorical int64 [n, n_cat]) for the model.

        ``columns`` is a DataFrame or any mapping of feature name -> 1-D values (the
        server passes the decoded request's numpy columns, with no DataFrame in between).
        Vectorised: serving calls this per request, so it avoids per-column pandas work."""
        first = next(iter([*self.numeric, *self.categories]), None)
        n = len(columns[first]) if first is not None else len(columns)
        if self.numeric:
            median, mean, std = self._numeric_arrays()
            raw = np.column_stack([_as_float(columns[c]) for c in self.numeric])
            z = (np.where(np.isnan(raw), median, raw) - mean) / std
            # Clip: a value far outside the training range (drift) should not saturate the
            # network; +-10 standard deviations keeps order and bounds the damage.
            x_num = np.clip(z, -Z_CLIP, Z_CLIP, out=z).astype(np.float32)
        else:
            x_num = np.empty((n, 0), dtype=np.float32)
        x_cat = np.empty((n, len(self.categories)), dtype=np.int64)
        for j, (c, index) in enumerate(self._indexes().items()):
            values = columns[c]
            values = values.tolist() if hasattr(values, "tolist") else values
            x_cat[:, j] = [index.get(_cat_key(v), 0) for v in values]
        return x_num, x_cat

    def _numeric_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, mean, std) per numeric column, built once."""
        cached = self.__dict__.get("_numeric_cache")
        if cached is None or cached[0] is not self.numeric:
            stats = list(self.numeric.values())
            arrays = (
                np.array([s.median for s in stats]),
                np.array([s.mean for s in stats]),
                np.array([s.std for s in stats]),
            )
            cached = (self.numeric, arrays)
            self.__dict__["_numeric_cache"] = cached
        return cached[1]

    def _indexes(self) -> dict[str, dict[str | None, int]]:
        """Category -> embedding index per column, built once (index 0: unknown)."""
        cached = self.__dict__.get("_index_cache")
        if cached is None or cached[0] is not self.categories:
            built: dict[str, dict[str | None, int]] = {
                c: {v: i + 1 for i, v in enumerate(cats)} for c, cats in self.categories.items()
            }
            cached = (self.categories, built)
            self.__dict__["_index_cache"] = cached
        return cached[1]

    # -- target ----------------------------------------------------------------------
    def _forward_target(self, y: np.ndarray) -> np.ndarray:
        return np.log1p(np.clip(y, 0, None)) if self.log_target else y

    def encode_target(self, y: pd.Series) -> np.ndarray:
        if self.task == "regression":
            t = self._forward_target(y.to_numpy(dtype="float64"))
            return ((t - self.target_mean) / self.target_std).astype(np.float32)
        index = {v: i for i, v in enumerate(self.classes)}
        return y.astype(str).map(index).to_numpy(dtype=np.int64)

    def decode_regression(self, z: np.ndarray) -> np.ndarray:
        t = z.astype("float64") * self.target_std + self.target_mean
        return np.expm1(t) if self.log_target else t

    # -- (de)serialisation -------------------------------------------------------------
    def to_json(self) -> str:
        # Key order is column order: never sort it.
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        d = json.loads(text)
        d["numeric"] = {k: NumericStats(**v) for k, v in d["numeric"].items()}
        return cls(**d)


def _as_float(values: Any) -> np.ndarray:
    """float64 with NaN for missing; anything non-numeric becomes NaN (then the median)."""
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":  # numpy array or plain Series
        return np.asarray(values, dtype="float64")
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )


def _cat_key(v: object) -> str | None:
    """Categories compare as strings; 3, 3.0 and "3" are the same category."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
