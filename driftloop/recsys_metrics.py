"""Top-k ranking metrics of recommendations: one protocol offline and online.

For every user with at least one interaction in the evaluation window, ``R`` is the set of
items they interacted with there and ``L`` their top-``k`` list (items they interacted with
before the window, in the model's training data, excluded). Per user, then averaged:

    ndcg10     DCG of L with binary relevance (1 / log2(rank + 1)) over the ideal DCG of
               min(|R|, k) hits
    recall10   |L & R| / |R|
    hitrate10  1 when L & R is not empty
    map10      sum over ranks j <= k of precision@j at each hit, / |R|  (Evidently's MAP)
    coverage   distinct items in all lists / the catalogue (items the model can recommend)

Offline (the test split, the gate, the baselines) the lists come from ``FittedModel.predict``
on the window's rows; online (the drift job) from the payload log, the relevant items from
feedback labels (``driftloop.recsys_drift``). Checked against Evidently 0.7's ``NDCG``,
``RecallTopK``, ``HitRate`` and ``MAP`` and hand-computed cases
(``tests/driftloop/test_recsys_metrics.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.spec import DatasetSpec

K = 10
_DISCOUNT = 1.0 / np.log2(np.arange(2, 1002))  # rank 1 .. 1000


def ranking_metrics(
    lists: Sequence[Sequence[str]], relevant: Sequence[set[str]], catalogue: int, k: int = K
) -> dict[str, float]:
    """The metrics above for users given as parallel ``lists`` and ``relevant`` sets."""
    if len(lists) != len(relevant):
        raise ValueError(f"{len(lists)} lists for {len(relevant)} users")
    ndcg, recall, hit, ap = [], [], [], []
    shown: set[str] = set()
    for top, rel in zip(lists, relevant, strict=True):
        top = [t for t in list(top)[:k] if t != ""]
        shown.update(top)
        if not rel:
            continue
        hits = np.fromiter((t in rel for t in top), dtype=bool, count=len(top))
        n_hits = int(hits.sum())
        ideal = float(_DISCOUNT[: min(len(rel), k)].sum())
        ndcg.append(float(_DISCOUNT[: len(top)][hits].sum()) / ideal)
        recall.append(n_hits / len(rel))
        hit.append(float(n_hits > 0))
        precision = np.cumsum(hits) / np.arange(1, len(top) + 1)
        ap.append(float(precision[hits].sum()) / len(rel))
    mean = (lambda v: float(np.mean(v))) if ndcg else (lambda v: float("nan"))
    return {
        f"ndcg{k}": mean(ndcg),
        f"recall{k}": mean(recall),
        f"hitrate{k}": mean(hit),
        f"map{k}": mean(ap),
        "coverage": len(shown) / catalogue if catalogue else float("nan"),
        "users": float(len(ndcg)),
    }


def relevant_by_user(users: Sequence[str], items: Sequence[str]) -> dict[str, set[str]]:
    """Each user's set of interacted items, users in order of first appearance."""
    out: dict[str, set[str]] = {}
    for u, i in zip(users, items, strict=True):
        out.setdefault(u, set()).add(i)
    return out


def evaluate(
    recommend: Callable[[list[str]], list[list[str]]],
    window: pd.DataFrame,
    spec: DatasetSpec,
    catalogue: int,
    k: int = K,
) -> dict[str, float]:
    """Metrics of ``recommend`` (user ids -> their top-``k`` lists, seen items excluded) on
    the interactions of ``window``."""
    opts = spec.interaction_options
    rel = relevant_by_user(window[opts.user].tolist(), window[opts.item].tolist())
    users = list(rel)
    return ranking_metrics(recommend(users), [rel[u] for u in users], catalogue, k)


def prediction_metrics(
    pred: dict[str, np.ndarray], window: pd.DataFrame, spec: DatasetSpec
) -> dict[str, float]:
    """``driftloop.metrics.scores`` for task ``ranking``: ``pred`` is a recommender's
    ``FittedModel.predict`` on the window's rows (each row's list is its user's)."""
    opts = spec.interaction_options
    users = window[opts.user].astype(str).to_numpy()
    first: dict[str, int] = {}
    for i, u in enumerate(users):
        first.setdefault(u, i)
    rel = relevant_by_user(users.tolist(), window[opts.item].astype(str).tolist())
    order = list(rel)
    lists = [pred["items"][first[u]] for u in order]
    catalogue = int(pred["catalogue"][0]) if len(pred["catalogue"]) else 0
    out = ranking_metrics(lists, [rel[u] for u in order], catalogue)
    out.pop("users")
    return out
