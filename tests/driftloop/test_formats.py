"""The store's typed formats: round trips, strictness, and a 0.1.0 store still loads."""

import math
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.errors import IntegrityError
from driftloop.formats import (
    Alias,
    Aliases,
    FeatureSchema,
    FileEntry,
    Lease,
    Lineage,
    Manifest,
    TabularSchema,
    TimeWindow,
    TrialRecord,
    TriggerRecord,
    VersionFiles,
    VersionMetrics,
    WindowRecord,
    parse_window_id,
    safe_relative,
    window_id,
)
from driftloop.payloads import read_logs
from driftloop.policy import WindowSummary
from driftloop.registry import Registry, VersionRef
from driftloop.settings import load_settings
from driftloop.steps import load_version
from driftloop.store import open_store
from driftloop.trigger import TriggerLog
from serving.artifacts import load_from_registry

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "store-0.1.0"
SHA = "0" * 64

EXAMPLES = [
    Manifest(
        model="m",
        version=3,
        created="2026-01-01T00:00:00+00:00",
        family="tabular-torch",
        files={"model.safetensors": FileEntry(sha256=SHA, bytes=10)},
        lineage=Lineage(window=TimeWindow(start="2011-01-01", end="2012-01-01"), epochs=4),
    ),
    TabularSchema(
        model="m",
        task="binary",
        target="y",
        features=[
            FeatureSchema(name="a", kind="numeric", datatype="FP64"),
            FeatureSchema(name="c", kind="categorical", datatype="BYTES", categories=["x"]),
        ],
        classes=["no", "yes"],
        positive_label="yes",
        threshold=0.3,
    ),
    VersionMetrics(test={"rmse": 1.5, "roc_auc": float("nan")}, baselines={"dumb": {"rmse": 2}}),
    Aliases(production=Alias(version=2, updated="t"), previous=Alias(version=1, updated="t")),
    TriggerRecord(
        id="trg-1",
        model="m",
        version=1,
        reason=["drift"],
        window=TimeWindow(start="a", end="b"),
        evidence={"report": "k"},
        train_window=TimeWindow(start="c", end="b"),
        status="failed",
        attempts=2,
    ),
    Lease(trigger_id="trg-1", holder="h", expires="2026-01-01T00:00:00+00:00"),
    TrialRecord(family="tabular-torch", params={"hidden": 64}, epochs=3, validation={"r2": 0.9}),
]


def _same(a, b) -> bool:  # NaN-aware equality of dumped documents
    return a.model_dump_json() == b.model_dump_json()


@pytest.mark.parametrize("doc", EXAMPLES, ids=lambda d: type(d).__name__)
def test_every_format_round_trips(doc):
    again = type(doc).parse(doc.dump(), "test")
    assert _same(again, doc)


def test_nan_metrics_survive_the_round_trip():
    m = VersionMetrics.parse(VersionMetrics(test={"roc_auc": float("nan")}).dump(), "t")
    assert math.isnan(m.test["roc_auc"])


def test_unknown_keys_and_bad_values_are_refused_with_the_place():
    with pytest.raises(IntegrityError, match=r"models/m/aliases.json is not a valid Aliases: nope"):
        Aliases.parse(b'{"nope": 1}', "models/m/aliases.json")
    with pytest.raises(IntegrityError, match="production.version"):
        Aliases.parse(b'{"production": {"version": "x", "updated": "t"}}', "a")
    with pytest.raises(IntegrityError, match="not a valid Manifest"):
        Manifest.parse(b"[1, 2]", "m")
    with pytest.raises(IntegrityError, match="files.*sha256"):
        bad_sha = {"a": {"sha256": "zz", "bytes": 1}}
        Manifest.parse({"model": "m", "version": 1, "created": "t", "files": bad_sha}, "m")


@pytest.mark.parametrize("name", ["model.safetensors", "reference/stats.json"])
def test_safe_relative_accepts_version_file_names(name):
    assert safe_relative(name) == name


@pytest.mark.parametrize("name", ["", "/etc/x", "../x", "a/../../x", "a//b", "a/./b", "a\\b"])
def test_safe_relative_refuses_anything_that_could_leave_the_directory(name):
    with pytest.raises(ValueError, match="relative, normalised"):
        safe_relative(name)


def test_window_ids_sort_by_time_and_parse_back():
    wid = window_id("canary", datetime(2012, 1, 1), datetime(2012, 1, 15, 6, 30))
    assert wid == "canary-20120101T0000-20120115T0630"
    assert parse_window_id(wid) == ("canary", datetime(2012, 1, 1), datetime(2012, 1, 15, 6, 30))
    assert parse_window_id("my-canary-20120101T0000-20120115T0630")[0] == "my-canary"
    assert parse_window_id("not a window") is None


# -- a store written by driftloop 0.1.0 ---------------------------------------------------
@pytest.fixture
def legacy(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(LEGACY, root)
    return open_store(load_settings(store_uri=str(root)))


def test_a_0_1_0_version_loads_serves_and_predicts(legacy, tmp_path):
    reg = Registry(legacy)
    ref = VersionRef("toy", 1)
    man = reg.manifest(ref)
    assert man.family == "tabular-torch"  # the only family there was
    assert man.lineage.code_version == "0.1.0" and man.lineage.epochs == 40
    assert reg.alias("toy", "production") == 1  # from aliases/production.json
    model = load_version(reg, ref)
    bundle = load_from_registry(reg, ref)
    assert bundle.family == "tabular-torch" and bundle.schema.names == ["a", "b", "colour"]
    rows = pd.DataFrame({"a": [0.1, -1.0], "b": [2.0, 9.0], "colour": ["red", "blue"]})
    np.testing.assert_array_equal(model.predict(rows)["value"], bundle.model.predict(rows)["value"])
    metrics = VersionMetrics.parse(reg.read_file(ref, VersionFiles.METRICS), "metrics")
    assert set(metrics.baselines) == {"dumb", "gbm"}


def test_a_0_1_0_store_promotes_into_the_one_object_aliases(legacy, tmp_path):
    reg = Registry(legacy)
    reg.promote("toy", 1)  # already production: nothing to write
    assert not legacy.exists("models/toy/aliases.json")
    # A second version (the first one's files again) is promoted: the old production
    # pointer, read from aliases/production.json, becomes previous in the new object.
    copy = reg.download(VersionRef("toy", 1), tmp_path / "v1")
    (copy / VersionFiles.MANIFEST).unlink()
    v2 = reg.register("toy", copy, Lineage(run_id="r2"), "tabular-torch")
    reg.promote("toy", v2.version)
    both = Aliases.parse(legacy.get("models/toy/aliases.json"), "aliases")
    assert (both.production.version, both.previous.version) == (2, 1)
    assert reg.rollback("toy") == 1 and reg.alias("toy", "previous") == 2


def test_0_1_0_monitoring_records_read_back(legacy):
    key = "monitoring/toy/windows/default-20200130T0000-20200203T0000/summary.json"
    record = WindowRecord.parse(legacy.get(key), key)
    assert record.drifted_columns == ["a"] and record.trigger
    summary = WindowSummary.from_record(record)
    assert summary.rows == 96 and summary.drifted_share == pytest.approx(1 / 3)
    (trigger,) = TriggerLog(legacy, "toy").all()
    assert trigger.status == "failed" and trigger.train_window.start.startswith("2019-08-07")
    logs = read_logs(legacy, "toy", 1, "default")
    assert len(logs) == 104  # 2020-01-30 00:00 to the toy data's last hour, 2020-02-03 07:00
    assert {"a", "b", "colour", "prediction", "request_id", "event_time"} <= set(logs)
