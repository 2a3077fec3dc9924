"""driftloop.drift: decisions equal Evidently's DataDriftPreset; errors name the column.

.venv/bin/python -m pytest -q tests/driftloop/test_drift.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.drift import (
    JENSEN_SHANNON,
    PREDICTION,
    WASSERSTEIN,
    column_drift,
    evidently_report,
    load_statistics,
    reference_statistics,
    save_statistics,
)
from driftloop.errors import DataError
from driftloop.formats import TabularSchema

ROOT = Path(__file__).resolve().parents[2]
# flag is 0/1: few distinct values -> JS (or Z/chi)
SCHEMA = TabularSchema.of_columns(["a", "b", "flag"], ["colour", "size"], "toy", target="y")


def frame(
    n: int,
    seed: int,
    shift_a: float = 0.0,
    colours: tuple = (0.5, 0.3, 0.2),
    p_flag: float = 0.3,
    shift_pred: float = 0.0,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(shift_a, 1, n)
    a[rng.random(n) < 0.01] = np.nan  # a few missing values, dropped as Evidently does
    return pd.DataFrame(
        {
            "a": a,
            "b": rng.uniform(0, 10, n).round(1),
            "flag": (rng.random(n) < p_flag).astype(float),
            "colour": rng.choice(["red", "green", "blue"], n, p=colours),
            "size": rng.choice(["s", "m", "l", "xl"], n),
            PREDICTION: rng.normal(shift_pred, 1, n),
            "y": rng.normal(0, 1, n),
        }
    )


def evidently_run(ref: pd.DataFrame, cur: pd.DataFrame, tmp_path: Path) -> dict:
    return evidently_report(ref, cur, SCHEMA, tmp_path / "r.html", sample_rows=len(cur))


def assert_same(ours, theirs: dict) -> None:
    """Per-column test name, score and drifted flag; the share and the dataset decision."""
    for name, d in [*ours.columns.items(), (PREDICTION, ours.prediction)]:
        t = theirs["columns"][name]
        assert (d.stattest, d.drifted, d.threshold) == (
            t["stattest"],
            t["drifted"],
            t["threshold"],
        ), name
        assert d.score == pytest.approx(t["score"], rel=1e-9, abs=1e-12), name
    assert ours.drifted_share == pytest.approx(theirs["drifted_share"])
    assert ours.dataset_drift == theirs["dataset_drift"]


def test_identical_distributions_do_not_drift() -> None:
    r = column_drift(frame(5000, 1), frame(3000, 2), SCHEMA)
    assert r.drifted_columns == [] and not r.dataset_drift and not r.prediction.drifted
    assert (r.reference_rows, r.current_rows) == (5000, 3000)


def test_shifted_numeric_drifts_by_wasserstein() -> None:
    r = column_drift(frame(5000, 1), frame(3000, 2, shift_a=0.5), SCHEMA)
    assert r.columns["a"].stattest == WASSERSTEIN and r.columns["a"].drifted
    assert r.drifted_columns == ["a"] and r.drifted_share == pytest.approx(0.2)


def test_categorical_shift_drifts_by_jensen_shannon() -> None:
    r = column_drift(frame(5000, 1), frame(3000, 2, colours=(0.1, 0.3, 0.6)), SCHEMA)
    assert r.columns["colour"].stattest == JENSEN_SHANNON and r.columns["colour"].drifted
    assert r.columns["flag"].stattest == JENSEN_SHANNON  # 2 distinct numbers: like categories


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_ref", [4000, 600])  # Wasserstein/JS regime and K-S/chi/Z regime
def test_decisions_equal_evidently(seed: int, n_ref: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    ref = frame(n_ref, seed)
    # Small random shifts straddle the thresholds, so both outcomes get exercised.
    cur = frame(
        1500,
        seed + 100,
        shift_a=rng.uniform(0, 0.3),
        p_flag=rng.uniform(0.25, 0.4),
        colours=(0.4, 0.3, 0.3) if seed % 2 else (0.5, 0.3, 0.2),
        shift_pred=rng.uniform(0, 0.3),
    )
    ours = column_drift(reference_statistics(ref, SCHEMA), cur, SCHEMA)
    assert_same(ours, evidently_run(ref, cur, tmp_path)["drift"])
    if n_ref < 1000:
        assert {d.stattest for d in ours.columns.values()} >= {
            "K-S p_value",
            "Z-test p_value",
            "chi-square p_value",
        }


def test_majority_drift_is_dataset_drift_like_evidently(tmp_path: Path) -> None:
    ref = frame(3000, 5)
    cur = frame(2000, 6, shift_a=1, colours=(0.1, 0.1, 0.8), p_flag=0.8).assign(b=lambda d: d.b + 3)
    ours = column_drift(ref, cur, SCHEMA)
    assert ours.dataset_drift and ours.drifted_share == pytest.approx(0.8)
    assert_same(ours, evidently_run(ref, cur, tmp_path)["drift"])


def test_parquet_window_is_read_column_by_column(tmp_path: Path) -> None:
    ref, cur = frame(3000, 7), frame(2000, 8, shift_a=0.5)
    cur.to_parquet(tmp_path / "w1.parquet")
    cur.iloc[:10].to_parquet(tmp_path / "w2.parquet")
    from_files = column_drift(ref, [tmp_path / "w1.parquet", tmp_path / "w2.parquet"], SCHEMA)
    from_frame = column_drift(ref, pd.concat([cur, cur.iloc[:10]]), SCHEMA)
    assert from_files == from_frame and from_files.current_rows == 2010


def test_statistics_round_trip_through_json(tmp_path: Path) -> None:
    ref, cur = frame(3000, 3), frame(2000, 4, shift_a=0.3)
    stats = reference_statistics(ref, SCHEMA)
    save_statistics(stats, tmp_path / "stats.json")
    loaded = load_statistics((tmp_path / "stats.json").read_bytes())
    assert loaded == json.loads(json.dumps(stats))
    assert column_drift(loaded, cur, SCHEMA) == column_drift(ref, cur, SCHEMA)


def test_missing_column_is_named() -> None:
    with pytest.raises(DataError, match="colour"):
        column_drift(frame(2000, 1), frame(500, 2).drop(columns="colour"), SCHEMA)
    with pytest.raises(DataError, match="prediction"):
        column_drift(frame(2000, 1), frame(500, 2).drop(columns=PREDICTION), SCHEMA)


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("a", "text"),  # strings in a numeric column
        ("colour", 3),  # numbers in a categorical column
    ],
)
def test_type_mismatch_is_named(column: str, values: object) -> None:
    cur = frame(500, 2).assign(**{column: values})
    with pytest.raises(DataError, match=column):
        column_drift(frame(2000, 1), cur, SCHEMA)


def test_mixed_types_and_all_missing_are_named() -> None:
    cur = frame(500, 2)
    cur["size"] = cur["size"].astype(object)
    cur.loc[3, "size"] = 7
    with pytest.raises(DataError, match="size"):
        column_drift(frame(2000, 1), cur, SCHEMA)


def test_all_missing_columns_are_findings_not_errors(tmp_path: Path) -> None:
    """The server accepts nulls: a window where a column is all null (numeric NaN, or a
    categorical of None that Arrow types as null) is reported, not a crash."""
    ref = frame(2000, 1)
    cur = frame(500, 2).assign(b=np.nan, size=None)
    cur.loc[cur.index < 100, "colour"] = None  # partly null: tested on what is there
    r = column_drift(ref, cur, SCHEMA)
    assert r.missing_columns == ["b", "size"]
    assert set(r.columns) == {"a", "flag", "colour"}  # the share is over tested columns
    assert r.missing_shares["b"] == r.missing_shares["size"] == 1.0
    assert r.missing_shares["colour"] == pytest.approx(0.2)
    assert r.drifted_share == pytest.approx(len(r.drifted_columns) / 3)
    # The same from Parquet (as the job reads logs), and from precomputed statistics.
    cur.to_parquet(tmp_path / "w.parquet")
    assert column_drift(reference_statistics(ref, SCHEMA), tmp_path / "w.parquet", SCHEMA) == r
    # Evidently's report leaves them out instead of failing.
    out = evidently_report(ref, cur, SCHEMA, tmp_path / "r.html", sample_rows=500)
    assert set(out["drift"]["columns"]) == {"a", "flag", "colour", PREDICTION}


def test_every_feature_missing_is_recorded_with_no_drift() -> None:
    # `size` all NaN: a float column where strings belong (a writer inferred the type of
    # an all-null batch); with no value, it is missing, not a type error.
    cur = frame(300, 2).assign(a=np.nan, b=np.nan, flag=np.nan, colour=None, size=np.nan)
    r = column_drift(frame(2000, 1), cur, SCHEMA)
    assert r.missing_columns == ["a", "b", "flag", "colour", "size"]
    assert (r.columns, r.drifted_share, r.dataset_drift) == ({}, 0.0, False)
    assert r.prediction is not None


def test_a_reference_without_values_is_refused_at_registration() -> None:
    with pytest.raises(DataError, match="'b' has only missing values in the reference"):
        reference_statistics(frame(500, 1).assign(b=np.nan), SCHEMA)


def test_empty_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty window"):
        column_drift(frame(2000, 1), frame(2000, 2).iloc[:0], SCHEMA)
    frame(10, 2).iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="empty window"):
        column_drift(frame(2000, 1), tmp_path / "empty.parquet", SCHEMA)


def test_report_html_and_quality_on_labelled_rows(tmp_path: Path) -> None:
    ref, cur = frame(3000, 1), frame(20_000, 2)
    cur.loc[cur.index % 3 != 0, "y"] = np.nan  # labels arrived for a third of the rows
    out = evidently_report(ref, cur, SCHEMA, tmp_path / "report.html", sample_rows=2000)
    html = (tmp_path / "report.html").read_text()
    assert len(html) > 10_000 and "root_metric_" in html and "colour" in html
    assert (tmp_path / "report.quality.html").stat().st_size > 10_000
    assert out["sample"] == {"rows": 2000, "of": 20_000, "seed": 0}
    labelled = cur.dropna(subset=["y"])
    assert out["quality"]["rows"] == 2000 and 0.5 < out["quality"]["rmse"] / np.sqrt(2) < 1.5
    assert out["drift"]["dataset_drift"] is False
    json.dumps(out["drift"]), json.dumps(out["quality"])  # plain JSON for summary.json
    assert len(labelled) > 2000


# -- The bundled bike-sharing data: what the loop's correctness tests rely on -----------
@pytest.fixture(scope="module")
def bike() -> tuple[dict, TabularSchema, pd.DataFrame]:
    from driftloop.data import load_window
    from driftloop.spec import load_spec

    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    y2011 = load_window(spec, "2011-01-01", "2012-01-01")
    schema = TabularSchema.of_columns(spec.numeric, spec.categorical, spec.name)
    # Reference: a random half of 2011 (Jan-Dec); held out: the other half.
    idx = np.random.default_rng(0).permutation(len(y2011))
    ref, held = y2011.iloc[idx[: len(idx) // 2]], y2011.iloc[idx[len(idx) // 2 :]]
    return reference_statistics(ref, schema), schema, held


def test_bike_in_distribution_stream_never_triggers(bike) -> None:
    from driftloop.policy import DriftPolicy, WindowSummary, decide

    stats, schema, held = bike
    policy, history, triggers = DriftPolicy(), [], 0
    t0, day = pd.Timestamp("2012-01-01").to_pydatetime(), pd.Timedelta("1D")
    for i in range(50):  # 50 windows of min_rows random held-out 2011 rows
        r = column_drift(stats, held.sample(n=policy.min_rows, random_state=i), schema)
        w = WindowSummary.from_drift(t0 + i * day, t0 + (i + 1) * day, r)
        triggers += decide(policy, history, w, w.end, None, False).trigger
        history.append(w)
    assert triggers == 0 and max(w.drifted_share for w in history) < 0.5


def test_bike_january_2012_drifts_in_its_first_full_window(bike) -> None:
    from driftloop.data import load_window
    from driftloop.policy import DriftPolicy, WindowSummary, decide
    from driftloop.spec import load_spec

    stats, schema, _ = bike
    jan = load_window(load_spec(ROOT / "data" / "bike_sharing.yaml"), "2012-01-01", "2012-02-01")
    first = jan.iloc[: DriftPolicy().min_rows]  # the first window with min_rows rows
    r = column_drift(stats, first, schema)
    # yr is a new category, season and mnth collapse to winter, temperatures fall.
    assert {"yr", "season", "mnth", "temp", "atemp"} <= set(r.drifted_columns)
    assert r.dataset_drift and column_drift(stats, jan, schema).dataset_drift
    w = WindowSummary.from_drift(first.event_time.min(), first.event_time.max(), r)
    assert decide(DriftPolicy(), [], w, w.end, None, False).trigger
