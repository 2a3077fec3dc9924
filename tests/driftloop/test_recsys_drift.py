"""A recommender through the real drift job: a registered model, logs written as the
collector writes what the family logs (the user and the ranked items), feedback posted as
labels by request id, ``run_window`` with no recommender special case: hit rate and NDCG
per window, new users and new items, the policy triggering on new items."""

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from driftloop.data import TIME, load_window, split_by_time
from driftloop.formats import Lineage, VersionFiles, parse_schema
from driftloop.monitor import run_window
from driftloop.payloads import write_labels, write_log_frame
from driftloop.policy import DriftPolicy, load_policy
from driftloop.recsys_drift import NEW_ITEM
from driftloop.registry import Registry
from driftloop.spec import load_spec
from driftloop.steps import load_version, register, train_trial
from driftloop.store import LocalStore
from tests.conftest import ROOT
from tests.interactions import toy_interactions, write_toy_interactions

TRIAL = {"family": "recsys-mf", "params": {"max_epochs": 20, "dim": 16, "lr": 1e-2}}
DAY = datetime(2024, 3, 1)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("recdrift")
    spec = load_spec(write_toy_interactions(root / "data"))
    s = split_by_time(load_window(spec, None, None), spec)
    for name, df in (("train", s.train), ("validation", s.validation), ("test", s.test)):
        df.to_parquet(root / f"{name}.parquet", index=False)
    train_trial(root / "train.parquet", root / "validation.parquet", spec, TRIAL, root / "m")
    store = LocalStore(root / "store")
    register(
        root / "m", root / "train.parquet", root / "test.parquet", spec, store, Lineage(), True
    )
    return store, spec, s.test


def _serve(store, spec, rows: pd.DataFrame, day: datetime) -> None:
    """Each interaction: a request by its user (logged as the family logs it), then the
    interaction as feedback for that request id."""
    registry = Registry(store)
    ref = registry.resolve(spec.name)
    model = load_version(registry, ref)
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    _, logged = model.predict_logged(rows)
    frame = pd.DataFrame(logged)
    frame[TIME] = [day + timedelta(minutes=i) for i in range(len(rows))]
    frame["prediction"] = np.nan
    frame["request_id"] = [f"{day:%m%d}-{i}" for i in range(len(rows))]
    write_log_frame(store, spec.name, ref.version, "default", schema, frame)
    write_labels(
        store,
        spec.name,
        [
            {
                "request_id": rid,
                "row": 0,
                "label": item,
                "time": (t + timedelta(seconds=30)).isoformat(),
            }
            for rid, item, t in zip(frame["request_id"], rows["item"], frame[TIME], strict=True)
        ],
    )


def test_feedback_gives_quality_and_new_items_trigger(registered):
    store, spec, test = registered
    quiet = test  # held out, after the training rows: what the model serves next
    _serve(store, spec, quiet, DAY)
    policy = load_policy(ROOT / "data" / "movielens_policy.yaml")
    rec = run_window(store, spec.name, DAY, DAY + timedelta(days=1), policy=policy, backend=None)
    assert rec.quality is not None and rec.quality["rows"] == quiet["user"].nunique()
    # the test split's protocol, online: the same figure as the version's test metrics
    raw = Registry(store).read_file(Registry(store).resolve(spec.name), VersionFiles.METRICS)
    assert rec.quality["ndcg10"] == pytest.approx(json.loads(raw)["test"]["ndcg10"])
    assert rec.drift.columns["new_items"].score == 0 and not rec.drift.columns["new_users"].drifted
    assert rec.evidently_decisions is not None
    recsys = rec.evidently_decisions["recsys"]
    assert recsys["ndcg10"] == pytest.approx(rec.quality["ndcg10"])  # Evidently agrees
    assert {"arp", "gini", "coverage", "personalisation"} <= set(recsys)
    assert not rec.trigger, rec.reasons

    # New items appear in the feedback and new users in the requests.
    moved = quiet.copy()
    moved.loc[::4, "item"] = [f"new-{i}" for i in range(len(moved.loc[::4]))]
    moved.loc[::2, "user"] = [f"stranger-{i}" for i in range(len(moved.loc[::2]))]
    day = DAY + timedelta(days=1)
    _serve(store, spec, moved, day)
    rec = run_window(store, spec.name, day, day + timedelta(days=1), policy=policy, backend=None)
    assert rec.drift.columns["new_items"].score == pytest.approx(0.25, abs=0.01)
    assert rec.drift.columns["new_users"].score == pytest.approx(0.5, abs=0.01)
    assert rec.trigger and any("key feature(s) drifted: new_items" in r for r in rec.reasons)
    assert NEW_ITEM not in rec.drifted_columns


def test_without_feedback_only_request_signals(registered):
    store, spec, _ = registered
    day = DAY + timedelta(days=5)
    rows = toy_interactions(seed=2).head(400)
    registry = Registry(store)
    ref = registry.resolve(spec.name)
    model = load_version(registry, ref)
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    _, logged = model.predict_logged(rows)
    frame = pd.DataFrame(logged)
    frame[TIME] = [day + timedelta(minutes=i) for i in range(len(rows))]
    frame["prediction"] = np.nan
    write_log_frame(store, spec.name, ref.version, "default", schema, frame)
    rec = run_window(
        store, spec.name, day, day + timedelta(days=1), policy=DriftPolicy(), backend=None
    )
    assert set(rec.drift.columns) == {"user_activity", "new_users"} and rec.quality is None
    assert rec.drift.prediction is not None  # the top score of known users
