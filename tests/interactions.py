"""Small synthetic interaction datasets, written as a user would bring their own: a CSV of
(user, item, timestamp, rating) and its spec. Nothing is downloaded or copied from
MovieLens: users belong to one of a few taste groups and mostly pick items of their
group, more popular ones more often, over 60 days, so that a factorisation can learn what
popularity alone cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def toy_interactions(
    n_users: int = 80, n_items: int = 60, per_user: int = 25, groups: int = 3, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group_of_item = np.arange(n_items) % groups
    appeal = rng.pareto(1.5, n_items) + 1  # a long tail
    rows = []
    start = pd.Timestamp("2024-01-01")
    for u in range(n_users):
        g = u % groups
        w = appeal * np.where(group_of_item == g, 8.0, 1.0)
        items = rng.choice(n_items, size=per_user, replace=False, p=w / w.sum())
        # each user is active throughout the 60 days: users recur across splits
        times = np.sort(rng.uniform(0, 60 * 86400, size=per_user))
        for i, t in zip(items, times, strict=True):
            rows.append(
                (f"u{u}", int(i), start + pd.Timedelta(seconds=float(t)), int(rng.integers(1, 6)))
            )
    df = pd.DataFrame(rows, columns=["user", "item", "when", "stars"])
    return df.sort_values("when", kind="stable").reset_index(drop=True)


def write_toy_interactions(
    directory: Path, fmt: str = "csv", frame: pd.DataFrame | None = None, **spec_overrides: object
) -> Path:
    """Data + spec into ``directory``; returns the spec path."""
    directory.mkdir(parents=True, exist_ok=True)
    df = toy_interactions() if frame is None else frame
    data = directory / f"interactions.{fmt}"
    if fmt == "csv":
        df.to_csv(data, index=False)
    else:
        df.to_parquet(data, index=False)
    spec = {
        "name": "toy-recsys",
        "kind": "interactions",
        "source": {"path": data.name},
        "time": {"column": "when"},
        "task": "ranking",
        "metric": "ndcg10",
        "interactions": {"user": "user", "item": "item", "rating": "stars"},
        "quality": {"min_rows_per_split": 50},
    }
    spec.update(spec_overrides)
    path = directory / "toy.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
