"""Image drift through the real drift job: a registered digits model, logs written as the
collector writes what the family logs, ``run_window`` with no image special case."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from driftloop.data import TIME, load_window, split_by_time
from driftloop.datakinds.image import IMAGE
from driftloop.formats import Lineage, VersionFiles, parse_schema
from driftloop.images import decode_png, encode_png
from driftloop.monitor import run_window
from driftloop.payloads import write_log_frame
from driftloop.policy import load_policy
from driftloop.registry import Registry
from driftloop.spec import load_spec
from driftloop.steps import load_version, register, train_trial
from driftloop.store import LocalStore
from tests.conftest import ROOT

TRIAL = {"family": "image-cnn", "params": {"max_epochs": 12, "filters": 16, "embedding": 16}}
DAY = datetime(2025, 1, 1)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgdrift")
    spec = load_spec(ROOT / "data" / "digits.yaml")
    s = split_by_time(load_window(spec, None, None), spec)
    for name, df in (("train", s.train), ("validation", s.validation), ("test", s.test)):
        df.to_parquet(root / f"{name}.parquet", index=False)
    train_trial(root / "train.parquet", root / "validation.parquet", spec, TRIAL, root / "m")
    store = LocalStore(root / "store")
    register(
        root / "m", root / "train.parquet", root / "test.parquet", spec, store, Lineage(), True
    )
    return store, s


def _log(store, rows: pd.DataFrame, day: datetime) -> None:
    registry = Registry(store)
    ref = registry.resolve("digits")
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    pred, logged = load_version(registry, ref).predict_logged(rows)
    frame = pd.DataFrame(logged)
    frame[TIME] = [day + timedelta(seconds=i) for i in range(len(rows))]
    frame["prediction"], frame["label"] = pred["probability"], pred["label"]
    write_log_frame(store, "digits", ref.version, "default", schema, frame)


def _noisy(png: bytes, rng: np.random.Generator) -> bytes:
    x = decode_png(png).astype(np.float64) / 255 + rng.normal(0, 0.2, (1, 8, 8)) + 0.15
    return encode_png(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))


def test_a_corrupted_window_drifts_in_every_signal_and_triggers(registered):
    store, s = registered
    policy = load_policy(ROOT / "data" / "digits_policy.yaml")
    rng = np.random.default_rng(0)
    clean = s.test.iloc[rng.integers(len(s.test), size=600)].reset_index(drop=True)
    _log(store, clean, DAY)
    quiet = run_window(store, "digits", DAY, DAY + timedelta(days=1), policy=policy, backend=None)
    assert not quiet.trigger and quiet.rows == 600
    assert set(quiet.drift.columns) == {"embedding", "brightness", "contrast", "sharpness"}
    corrupted = clean.assign(**{IMAGE: [_noisy(b, rng) for b in clean[IMAGE]]})
    _log(store, corrupted, DAY + timedelta(days=1))
    rec = run_window(
        store,
        "digits",
        DAY + timedelta(days=1),
        DAY + timedelta(days=2),
        policy=policy,
        backend=None,
    )
    assert rec.trigger and rec.drifted_share == 1.0, rec.reasons
    assert rec.drift.columns["embedding"].stattest.startswith("domain classifier")
    assert rec.drift.columns["embedding"].score > 0.65
    # The Evidently report ran on the same window, embeddings included.
    html = store.get(rec.report_key).decode()
    assert "embedding" in html.lower() and len(html) > 10_000


def test_key_features_may_name_the_embedding(registered):
    from driftloop.policy import DriftPolicy, check_policy

    store, _ = registered
    registry = Registry(store)
    ref = registry.resolve("digits")
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    check_policy(DriftPolicy(key_features=["embedding", "sharpness"]), schema.drift_columns)
    stats = registry.read_file(ref, VersionFiles.REFERENCE_STATS)
    assert b'"embedding"' in stats
