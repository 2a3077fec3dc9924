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
