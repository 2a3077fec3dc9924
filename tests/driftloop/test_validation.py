import numpy as np
import pytest

from driftloop.data import load_window
from driftloop.errors import ValidationFailed
from driftloop.spec import load_spec
from driftloop.validation import validate
from tests.toy import toy_frame, write_toy


def _report(tmp_path, frame, task="regression", **overrides):
    spec = load_spec(write_toy(tmp_path, task=task, frame=frame, **overrides))
    return validate(load_window(spec, None, None), spec)


def test_clean_data_passes_and_report_is_markdown(tmp_path):
    report = _report(tmp_path, toy_frame())
    assert report.failures == []
    md = report.to_markdown()
    assert md.startswith("# Data quality: toy") and "**passed**" in md
    report.raise_if_failed()  # does not raise


def test_all_nan_column_fails_naming_the_column(tmp_path):
    report = _report(tmp_path, toy_frame().assign(b=np.nan))
    with pytest.raises(ValidationFailed, match="column 'b': missing: every value is missing") as e:
        report.raise_if_failed()
    assert "| missing | `b` | fail |" in e.value.report


def test_mostly_missing_column_fails(tmp_path):
    frame = toy_frame()
    frame.loc[frame.index[:600], "a"] = np.nan
    assert [c.column for c in _report(tmp_path, frame).failures] == ["a"]


def test_single_class_target_fails(tmp_path):
    frame = toy_frame(task="binary").assign(y="neg")
    with pytest.raises(ValidationFailed, match="column 'y': label set: 1 class"):
        _report(tmp_path, frame, task="binary").raise_if_failed()


def test_too_few_rows_per_split_fails(tmp_path):
    with pytest.raises(ValidationFailed, match="rows per split: 30 rows in validation"):
        _report(tmp_path, toy_frame(200)).raise_if_failed()


def test_target_range_and_duplicates(tmp_path):
    frame = toy_frame()
    frame.loc[frame.index[:5], "y"] = -1.0
    failures = _report(
        tmp_path, frame, quality={"target_min": 0, "min_rows_per_split": 50}
    ).failures
    assert [(c.name, c.column) for c in failures] == [("target range", "y")]
    dup = toy_frame(400)
    dup = dup.loc[dup.index.repeat(2)].reset_index(drop=True)
    assert ("duplicates", "*") in [(c.name, c.column) for c in _report(tmp_path, dup).failures]


def test_constant_column_is_a_warning_not_a_failure(tmp_path):
    report = _report(tmp_path, toy_frame().assign(colour="red"))
    assert report.failures == []
    assert [c.column for c in report.checks if c.status == "warn"] == ["colour"]


def test_an_infinite_target_fails_before_any_training(tmp_path):
    frame = toy_frame()
    frame.loc[frame.index[3], "y"] = float("inf")
    with pytest.raises(ValidationFailed, match="column 'y': target finite: 1 infinite"):
        _report(tmp_path, frame).raise_if_failed()


def test_a_negative_target_with_log_target_fails(tmp_path):
    # log1p of a negative count is undefined; it used to be clipped to 0 silently.
    frame = toy_frame()
    frame.loc[frame.index[:2], "y"] = -3.0
    with pytest.raises(ValidationFailed, match="2 negative value.*log_target"):
        _report(tmp_path, frame, log_target=True).raise_if_failed()


def test_a_failed_check_says_what_was_found_and_what_was_expected(tmp_path):
    frame = toy_frame(task="binary")
    frame["y"] = frame["y"].str.upper()  # POS / NEG, the spec says "pos"
    frame.loc[frame.index[:500], "b"] = np.nan  # 62.5 % missing
    frame.loc[frame.index[3], "a"] = np.inf
    report = _report(tmp_path, frame, task="binary")
    by_name = {c.name: c.detail for c in report.failures}
    assert by_name["positive label"] == (
        "positive_label 'pos' is not one of the target's values ['NEG', 'POS']; "
        "expected one of them, spelled exactly as in the data"
    )
    assert by_name["missing"] == "62.5% missing; expected at most 50% (quality.max_missing_share)"
    assert by_name["finite"] == "1 infinite value(s); expected none"
    # One mechanism: every failure and warning states both; a pass states what was found.
    assert all("; expected " in c.detail for c in report.checks if c.status != "pass")
    assert all("expected" not in c.detail for c in report.checks if c.status == "pass")
    with pytest.raises(ValidationFailed) as e:
        report.raise_if_failed()
    assert str(e.value) == (
        "data validation failed: column 'b': missing: 62.5% missing; expected at most 50% "
        "(quality.max_missing_share) (and 2 more)"
    )


def _warnings(report):
    return {(c.name, c.column): c.detail for c in report.checks if c.status == "warn"}


def test_a_hole_in_the_time_column_is_a_warning(tmp_path):
    frame = toy_frame(1200).drop(index=range(300, 600))  # 300 hours missing
    report = _report(tmp_path, frame)
    assert report.failures == []
    assert _warnings(report) == {
        ("time gaps", "when"): "1 gap(s) over 1d; the largest 12d 13h, from 2020-01-13 11:00 "
        "to 2020-01-26 00:00; expected no gap over 1d (24 x the median spacing 1h; or set "
        "quality.max_gap)"
    }
    # A declared cadence: a 5-hour hole in hourly data is one when the spec says so.
    frame = toy_frame().drop(index=range(100, 104))
    assert ("time gaps", "when") not in _warnings(_report(tmp_path, frame))
    declared = _report(tmp_path, frame, quality={"max_gap": "2h", "min_rows_per_split": 50})
    assert _warnings(declared)[("time gaps", "when")].startswith("1 gap(s) over 2h; the largest 5h")


def test_repeated_timestamps_warn_unless_the_spec_allows_them(tmp_path):
    frame = toy_frame()
    frame.loc[[10, 11, 12], "when"] = frame.loc[9, "when"]
    detail = _warnings(_report(tmp_path, frame))[("repeated times", "when")]
    assert detail.startswith("3 row(s) with the time of the row before (first: 2020-01-01 09:00")
    events = _report(tmp_path, frame, quality={"unique_times": False, "min_rows_per_split": 50})
    assert ("repeated times", "when") not in _warnings(events)


def test_values_outside_a_declared_physical_range_fail(tmp_path):
    frame = toy_frame()
    frame.loc[[4, 7], "b"] = [-273.15, 99.0]
    report = _report(
        tmp_path, frame, ranges={"b": {"min": 0, "max": 10}, "a": {"min": -10, "max": 10}}
    )
    assert [(c.name, c.column, c.detail) for c in report.failures] == [
        (
            "range",
            "b",
            "2 value(s) outside [0, 10] (first: -273.15); expected none: ranges.b declares "
            "them physically impossible",
        )
    ]
    assert ("range", "a", "pass") in [(c.name, c.column, c.status) for c in report.checks]


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ({"colour": {"min": 0}}, r"ranges name \['colour'\], which are not numeric features"),
        ({"a": {"min": 3, "max": 1}}, "range min 3.0 is above max 1.0"),
        ({"a": {}}, "a range needs min, max or both"),
    ],
)
def test_bad_ranges_are_spec_errors(tmp_path, ranges, message):
    from driftloop.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_spec(write_toy(tmp_path, ranges=ranges))


def test_extreme_outliers_warn_with_the_rule(tmp_path):
    frame = toy_frame()
    frame.loc[5, "a"] = 1e4
    warned = _warnings(_report(tmp_path, frame))
    assert warned == {
        ("outliers", "a"): "1 value(s) with a robust z-score above 10 (most extreme: 10000, "
        "z = 9868); expected none: |x - median| / robust scale <= 10 (quality.outlier_z)"
    }


def test_bundled_bike_sharing_warns_of_its_one_real_hole():
    """Hurricane Sandy closed the scheme for a day and a half (2012-10-29/30)."""
    from tests.conftest import ROOT

    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    report = validate(load_window(spec, None, None), spec)
    assert report.failures == []
    assert [(c.name, c.column) for c in report.warnings] == [("time gaps", "dteday")]
    assert "from 2012-10-29 00:00 to 2012-10-30 13:00" in report.warnings[0].detail
