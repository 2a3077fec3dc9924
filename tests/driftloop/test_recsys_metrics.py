"""Ranking metrics: hand-computed small cases, and Evidently 0.7's recommender metrics
(NDCG, RecallTopK, HitRate, MAP) on random lists, the known implementation they follow."""

import math

import numpy as np
import pytest

from driftloop.recsys_drift import _value, evidently_frame
from driftloop.recsys_metrics import ranking_metrics


def test_hand_computed_case():
    lists = [["a", "b", "c"], ["x", "y", "z"], ["p", "q", "r"]]
    relevant = [{"b", "d"}, {"x"}, {"nothing"}]
    m = ranking_metrics(lists, relevant, catalogue=10, k=3)
    # user 1: hit at rank 2 of 2 relevant: DCG 1/log2(3), ideal 1 + 1/log2(3)
    ndcg1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg3"] == pytest.approx((ndcg1 + 1.0 + 0.0) / 3)
    assert m["recall3"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["hitrate3"] == pytest.approx(2 / 3)
    # AP: user 1 precision@2 = 1/2 at its one hit, / |R| = 2 -> 0.25; user 2: 1; user 3: 0
    assert m["map3"] == pytest.approx((0.25 + 1.0) / 3)
    assert m["coverage"] == pytest.approx(9 / 10)
    assert m["users"] == 3


def test_users_without_feedback_do_not_count_and_padding_is_ignored():
    m = ranking_metrics([["a", ""], ["b"]], [{"a"}, set()], catalogue=4, k=2)
    assert m["users"] == 1 and m["ndcg2"] == 1.0 and m["coverage"] == 0.5


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_agrees_with_evidently_on_random_lists():
    from driftloop.drift import _import_evidently

    _import_evidently()
    from evidently import DataDefinition, Dataset, Recsys, Report
    from evidently.metrics import MAP, NDCG, HitRate, RecallTopK

    rng = np.random.default_rng(0)
    items = [f"i{j}" for j in range(40)]
    lists, relevant = [], []
    for _ in range(60):
        lists.append(list(rng.choice(items, size=10, replace=False)))
        relevant.append(set(rng.choice(items, size=int(rng.integers(1, 15)), replace=False)))
    ours = ranking_metrics(lists, relevant, catalogue=40)
    definition = DataDefinition(
        numerical_columns=["rank", "target"],
        categorical_columns=["user_id", "item_id"],
        ranking=[
            Recsys(
                user_id="user_id",
                item_id="item_id",
                target="target",
                prediction="rank",
                recommendations_type="rank",
            )
        ],
    )
    metrics = {"ndcg10": NDCG(k=10), "recall10": RecallTopK(k=10), "hitrate10": HitRate(k=10)}
    metrics["map10"] = MAP(k=10)
    snap = Report(list(metrics.values())).run(
        Dataset.from_pandas(evidently_frame(lists, relevant), definition), None
    )
    for name, metric in metrics.items():
        value = _value(snap.context.get_metric_result(metric), ndcg=name == "ndcg10")
        assert ours[name] == pytest.approx(value), name
