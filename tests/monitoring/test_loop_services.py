"""The local loop's wiring, end to end: predictor and collector as real processes (the
demo's `services`), requests over HTTP, and every answered request in the store as a
Parquet row carrying its prediction; then a promotion hot-swaps the served model."""

import numpy as np
import pytest

from driftloop import steps
from driftloop.data import load_window
from driftloop.formats import Lineage
from driftloop.payloads import read_labels, read_logs
from driftloop.registry import Registry
from driftloop.settings import load_settings
from driftloop.spec import load_spec
from driftloop.store import open_store
from replay import demo
from tests.conftest import ROOT

TRIAL = {"family": "tabular-torch", "params": {"hidden": 64, "layers": 2, "max_epochs": 5}}


@pytest.fixture
def demo_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "OUT", tmp_path / "out")
    (tmp_path / "out").mkdir()
    return tmp_path


def _register(store, spec, tmp, start, end):
    """Train one short trial and register + promote it (no gate: any version will do)."""
    tmp.mkdir()
    steps.ingest(spec, start, end, tmp / "data.parquet")
    steps.split(
        tmp / "data.parquet", spec, tmp / "train.parquet", tmp / "val.parquet", tmp / "test.parquet"
    )
    steps.train_trial(tmp / "train.parquet", tmp / "val.parquet", spec, TRIAL, tmp / "m")
    return steps.register(
        tmp / "m", tmp / "train.parquet", tmp / "test.parquet", spec, store, Lineage(), promote=True
    )


def test_served_requests_land_in_the_store_and_promotion_hot_swaps(demo_paths):
    store = open_store(load_settings(store_uri=str(demo_paths / "store")))
    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    ref = _register(store, spec, demo_paths / "v1", "2011-01-01", "2011-04-01")
    rows = load_window(spec, "2012-01-01", "2012-01-03")
    with (
        demo.services(store.uri) as (collector, predictor),
        demo.Replay(predictor, collector, spec.features) as replay,
    ):
        served = replay.window(rows)
        replay.labels(served)
        replay.wait_flushed()
        logs = read_logs(store, "bike-sharing", ref.version, "default")
        assert len(logs) == len(rows) == len(served)
        got = logs.set_index("request_id").loc[served["request_id"]]
        np.testing.assert_allclose(got["prediction"].to_numpy(), served["prediction"].to_numpy())
        assert list(got["hr"]) == list(rows["hr"])
        assert (got["event_time"].to_numpy() == rows["event_time"].to_numpy()).all()
        assert set(read_labels(store, "bike-sharing")["request_id"]) == set(served["request_id"])

        # A new version is promoted: the server swaps to it and keeps answering.
        _register(store, spec, demo_paths / "v2", "2011-02-01", "2011-05-01")
        assert Registry(store).alias("bike-sharing", "production") == 2
        replay.wait_version(2)
        after = replay.window(rows.head(5))
        assert set(after["served_by"]) == {"2"}
