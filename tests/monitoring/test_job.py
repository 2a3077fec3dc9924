"""The drift job on real bike-sharing traffic: quiet on in-distribution data, triggering
exactly once on 2012 against the 2011 model, and refusing garbage with a clear error."""

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from driftloop.data import TIME, load_window
from driftloop.errors import DataError
from driftloop.formats import (
    WINDOW_SUMMARY,
    VersionFiles,
    WindowRecord,
    parse_schema,
    window_prefix,
)
from driftloop.monitor import run_window
from driftloop.payloads import write_log_frame
from driftloop.policy import DriftPolicy
from driftloop.registry import Registry
from driftloop.settings import load_settings
from driftloop.spec import load_spec
from driftloop.steps import load_version, run_inprocess
from driftloop.store import open_store
from tests.conftest import ROOT
from tests.driftloop.test_trigger import FakeKfp

# The trial the pipeline's 4-trial search selects on 2011 (one trial keeps this fast).
FAST = [
    {
        "family": "tabular-torch",
        "params": {
            "hidden": 128,
            "layers": 2,
            "dropout": 0.0,
            "lr": 0.004,
            "batch_size": 512,
            "seed": 2,
        },
    }
]
MODEL = "bike-sharing"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A bike model trained on 2011, registered and in production."""
    store = open_store(load_settings(store_uri=str(tmp_path_factory.mktemp("store"))))
    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    ref, decision = run_inprocess(spec, store, "2011-01-01", "2012-01-01", FAST)
    assert ref is not None, decision.summary
    schema = parse_schema(Registry(store).read_file(ref, VersionFiles.SCHEMA), "schema")
    model = load_version(Registry(store), ref)
    return store, spec, schema, model


def _log(store, schema, model, frame, start, step):
    """Log ``frame``'s rows as traffic at ``start``, ``start + step``, ..."""
    out = frame.copy()
    out["prediction"] = model.predict(out)["value"]
    out[TIME] = [start + i * step for i in range(len(out))]
    out["request_id"] = [f"{start:%Y%m%d}-{i}" for i in range(len(out))]
    write_log_frame(store, MODEL, 1, "default", schema, out)


def test_in_distribution_stream_over_50_windows_never_triggers(served):
    store, spec, schema, model = served
    # The served version was refit on the whole window, 2011, and its reference drawn from
    # it: 2011's rows, in random order, are the in-distribution stream. (Contiguous weeks
    # would drift against a year-long reference: seasons.)
    train = load_window(spec, "2011-01-01", "2012-01-01")
    rng = np.random.default_rng(7)
    start = datetime(2030, 1, 1)
    kfp = FakeKfp()
    results = []
    for w in range(50):
        sample = train.iloc[rng.choice(len(train), 300, replace=False)]
        w0 = start + timedelta(days=w)
        _log(store, schema, model, sample, w0, timedelta(minutes=4))
        results.append(
            run_window(
                store,
                MODEL,
                w0,
                w0 + timedelta(days=1),
                policy=DriftPolicy(),
                backend=kfp,
                report_rows=0,
            )
        )
    assert [r.rows for r in results] == [300] * 50
    fired = [
        (r.window_id, r.drifted_share, r.drifted_columns, r.reasons) for r in results if r.trigger
    ]
    assert fired == [] and kfp.runs == {}
    assert max(r.drifted_share for r in results) < 0.5


def test_2012_traffic_triggers_in_its_first_full_window_exactly_once(served, tmp_path):
    store, spec, schema, model = served
    jan = load_window(spec, "2012-01-01", "2012-02-01")
    _log(store, schema, model, jan, datetime(2012, 1, 1), timedelta(hours=1))
    # Delayed ground truth for the first window's rows arrives through the labels API.
    from driftloop.payloads import write_labels

    write_labels(
        store,
        MODEL,
        [
            {"request_id": f"20120101-{i}", "label": float(y)}
            for i, y in enumerate(jan["cnt"].iloc[:336])
        ],
    )
    kfp = FakeKfp()
    first = run_window(
        store, MODEL, datetime(2012, 1, 1), datetime(2012, 1, 15), policy=DriftPolicy(), backend=kfp
    )
    assert first.trigger and first.trigger_status == "running", first.reasons
    assert {"yr", "season", "mnth"} <= set(first.drifted_columns)
    expected = np.sqrt(
        np.mean((model.predict(jan.iloc[:336])["value"] - jan["cnt"].iloc[:336]) ** 2)
    )
    assert first.quality["rows"] == 336
    assert first.quality["rmse"] == pytest.approx(expected, rel=1e-6)
    key = f"{window_prefix(MODEL, first.window_id)}/{WINDOW_SUMMARY}"
    assert WindowRecord.parse(store.get(key), key) == first
    assert first.trigger_id is not None
    assert store.exists(first.report_key)
    assert len(kfp.runs) == 1
    # The next window drifts too, but a run is in flight: no second run.
    second = run_window(
        store,
        MODEL,
        datetime(2012, 1, 15),
        datetime(2012, 1, 29),
        policy=DriftPolicy(),
        backend=kfp,
        report_rows=0,
    )
    assert not second.trigger and "a triggered run is still in flight" in second.reasons
    assert len(kfp.runs) == 1


def test_garbage_windows_are_clear_errors(served, tmp_path):
    store, spec, schema, model = served

    def one_day(year: int) -> None:
        run_window(
            store,
            MODEL,
            datetime(year, 1, 1),
            datetime(year, 1, 2),
            policy=DriftPolicy(),
            backend=None,
        )

    with pytest.raises(DataError, match="empty window: no logged requests"):
        one_day(2040)
    # Logs whose columns do not match the version's schema.
    bad_schema = schema.model_copy(
        update={"features": [f for f in schema.features if f.name != "hum"]}
    )
    rows = load_window(spec, "2011-03-01", "2011-03-10").drop(columns=["hum"])
    rows["prediction"] = 1.0
    rows[TIME] = datetime(2041, 1, 1)
    write_log_frame(store, MODEL, 1, "default", bad_schema, rows)
    with pytest.raises(DataError, match=r"lack feature column\(s\) \['hum'\]"):
        one_day(2041)
    # A corrupt Parquet file in the window.
    store.put(f"logs/{MODEL}/v1/default/date=2042-01-01/broken.parquet", b"not parquet")
    with pytest.raises(DataError, match="broken.parquet"):
        one_day(2042)
    assert Registry(store).alias(MODEL, "production") == 1


# Consecutive two-day windows, each compared with the previous one too (recent drift).
EMPTY_COLUMNS = [
    (datetime(2044, 1, 1), {"holiday": 1.0}),  # a categorical column entirely empty
    (datetime(2044, 1, 3), {"hum": 1.0}),  # a numeric one
    (datetime(2044, 1, 5), {"holiday": 1.0, "hum": 1.0, "weathersit": 0.5}),
]


def test_windows_with_empty_columns_are_findings_not_failures(served):
    """The server accepts null features; the job must too: a column with no value in the
    window is recorded as missing (and left out of the drifted share), never an exit 1."""
    store, spec, schema, model = served
    rows = load_window(spec, "2011-06-01", "2011-06-15")
    for day, nulls in EMPTY_COLUMNS:
        window = rows.copy()
        for col, share in nulls.items():
            window[col] = window[col].astype(object)
            window.loc[window.index[: int(len(window) * share)], col] = None
        _log(store, schema, model, window, day, timedelta(minutes=5))
        record = run_window(
            store, MODEL, day, day + timedelta(days=2), policy=DriftPolicy(), backend=None
        )
        empty = sorted(c for c, share in nulls.items() if share == 1.0)
        assert record.rows == len(window)
        assert sorted(record.missing_columns) == sorted(record.drift.missing_columns) == empty
        assert not set(empty) & set(record.drift.columns)
        assert record.drift.missing_shares == pytest.approx(nulls)
        assert record.drifted_share == pytest.approx(
            len(record.drifted_columns) / (len(schema.features) - len(empty))
        )
        assert record.evidently_decisions is not None
        assert not set(empty) & set(record.evidently_decisions["columns"])
        if day > EMPTY_COLUMNS[0][0]:  # against the previous window, its empty columns too
            assert record.recent_drift_share is not None


def test_drift_component_writes_the_report_as_a_kfp_html_artifact(served, tmp_path):
    """The same job as a KFP component, run by kfp.local: Output[HTML] holds the report."""
    import warnings

    from kfp import local

    from components.drift import drift

    store, spec, schema, model = served
    feb = load_window(spec, "2012-02-01", "2012-02-15")
    _log(store, schema, model, feb, datetime(2012, 2, 1), timedelta(hours=1))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image")
        task = drift(
            model=MODEL,
            store_uri=store.uri,
            start="2012-02-01",
            end="2012-02-15",
            endpoint="default",
        )
    html = Path(task.outputs["report"].path).read_text()
    assert "<html" in html.lower() and len(html) > 10_000
    assert task.outputs["metrics"].metadata["rows"] == len(feb)
    assert task.outputs["metrics"].metadata["drifted_share"] >= 0.5  # 2012 vs 2011 drifts
    # Its bool is the job's recorded decision (which depends on earlier triggers in flight).
    key = f"{window_prefix(MODEL, 'default-20120201T0000-20120215T0000')}/{WINDOW_SUMMARY}"
    assert task.outputs["Output"] is WindowRecord.parse(store.get(key), key).trigger


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hours", "nan"], "--hours nan is out of range"),
        (["--hours", "1e12"], "--hours 1000000000000.0 is out of range"),
        (["--hours", "-1"], "--hours -1.0 is out of range"),
        (["--retrain-days", "1000000000"], "--retrain-days 1000000000 is out of range"),
        (["--margin", "-0.2"], "--margin -0.2 is out of range"),
        (["--start", "yesterday", "--end", "2012-01-01"], "not an ISO time: 'yesterday'"),
        (["--start", "0001-01-01T00:00:00+01:00", "--end", "2012-01-01"], "not an ISO time"),
    ],
)
def test_bad_job_flags_are_one_line(tmp_path, capsys, flags, message):
    from monitoring.job import main

    code = main(["--store", str(tmp_path / "store"), "--model", MODEL, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message in err[0], err


def test_the_job_line_says_what_the_run_did_not_just_that_it_finished():
    from monitoring.job import _outcome

    refused = "refused: rmse 90 does not beat champion v1 70 by margin 0.0%"
    assert _outcome("succeeded", refused) == refused
    assert _outcome("succeeded", "promoted v2") == "promoted v2"
    assert _outcome("running", None) == "running"
