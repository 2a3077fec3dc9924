"""A small synthetic dataset + spec, written as a user would bring their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def toy_frame(n: int = 800, seed: int = 0, task: str = "regression") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.uniform(0, 10, size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    effect = pd.Series(colour).map({"red": 2.0, "green": 0.0, "blue": -2.0}).to_numpy()
    signal = 3 * a + 0.5 * b + effect + rng.normal(scale=0.3, size=n)
    if task == "regression":
        y: object = signal
    elif task == "binary":
        y = np.where(signal > np.median(signal), "pos", "neg")
    else:
        y = np.select([signal < 1, signal < 4], ["low", "mid"], "high")
    return pd.DataFrame(
        {
            "when": pd.date_range("2020-01-01", periods=n, freq="h").astype(str),
            "a": a,
            "b": b,
            "colour": colour,
            "row_id": np.arange(n),
            "y": y,
        }
    )


def write_toy(
    directory: Path,
    task: str = "regression",
    fmt: str = "csv",
    n: int = 800,
    frame: pd.DataFrame | None = None,
    **spec_overrides: object,
) -> Path:
    """Write data + spec into ``directory``; returns the spec path."""
    directory.mkdir(parents=True, exist_ok=True)
    df = toy_frame(n, task=task) if frame is None else frame
    data = directory / f"toy.{fmt}"
    if fmt == "csv":
        df.to_csv(data, index=False)
    else:
        df.to_parquet(data, index=False)
    metric = {"regression": "rmse", "binary": "roc_auc", "multiclass": "f1"}[task]
    spec = {
        "name": "toy",
        "source": {"path": data.name},
        "time": {"column": "when"},
        "target": "y",
        "task": task,
        "numeric": ["a", "b"],
        "categorical": ["colour"],
        "drop": ["row_id"],
        "metric": metric,
        "quality": {"min_rows_per_split": 50},
    }
    if task == "binary":
        spec["positive_label"] = "pos"
    spec.update(spec_overrides)
    path = directory / "toy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
