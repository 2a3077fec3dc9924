"""The validation gate: schema and quality checks before any training.

``validate(df, spec)`` returns a report with one line per check and column; the pipeline
writes it as a Markdown artifact (visible in the KFP UI) and stops with a column-level
message when any check fails. Constant columns are reported as warnings, not failures:
a training window inside one year makes bike sharing's ``yr`` constant, legitimately.

Warnings, never failures (the data may be right; the user should look):

- a **gap** in the time column larger than ``quality.max_gap``, or when that is not set,
  than ``GAP_FACTOR`` (24) times the median spacing between consecutive distinct times;
- **repeated timestamps** when ``quality.unique_times`` (the default: a time series has
  one row per time; set it false for events or several entities per time);
- **outliers**: numeric values whose robust z-score ``|x - median| / scale`` exceeds
  ``quality.outlier_z`` (10), the scale being the larger of ``1.4826 * MAD`` and
  ``IQR / 1.349`` (both estimate the standard deviation of normal data; the IQR keeps a
  second mode from reading as outliers); where both are 0 (over three quarters of the
  values equal), ``1.2533 * mean |x - median|``; a constant column has no outliers.

A failure, as clearly impossible: a value outside the feature's declared physical
``ranges: {column: {min, max}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from driftloop.data import TIME, split_by_time
from driftloop.errors import ValidationFailed
from driftloop.spec import DatasetSpec

Status = Literal["pass", "warn", "fail"]
GAP_FACTOR = 24  # an inferred gap limit: this many median steps (a day of hourly data)
MAD_TO_SD = 1.4826  # MAD x this estimates the standard deviation of normal data
IQR_TO_SD = 1.349  # the interquartile range / this, likewise
MEAN_AD_TO_SD = 1.2533  # the mean absolute deviation x this, likewise (sqrt(pi / 2))


@dataclass(frozen=True)
class Check:
    """One check on one column: what was ``found`` and, when it is not a pass, what was
    ``expected``; ``detail`` says both, so no message can state only the passing condition."""

    name: str
    column: str
    status: Status
    found: str
    expected: str

    @property
    def detail(self) -> str:
        return self.found if self.status == "pass" else f"{self.found}; expected {self.expected}"


@dataclass
class ValidationReport:
    dataset: str
    rows: int
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def add(
        self, name: str, column: str, ok: bool, found: str, *, expected: str, warn: bool = False
    ) -> None:
        """``found``: what the data holds, true whatever the outcome; ``expected``: what
        passes (shown when the check fails or warns)."""
        status: Status = "pass" if ok else ("warn" if warn else "fail")
        self.checks.append(Check(name, column, status, found, expected))

    def to_markdown(self) -> str:
        verdict = "FAILED" if self.failures else "passed"
        lines = [
            f"# Data quality: {self.dataset}",
            "",
            f"**{verdict}** — {self.rows} rows, {len(self.failures)} failing check(s).",
            "",
            "| check | column | status | detail |",
            "|---|---|---|---|",
        ]
        order = {"fail": 0, "warn": 1, "pass": 2}
        for c in sorted(self.checks, key=lambda c: order[c.status]):
            lines.append(f"| {c.name} | `{c.column}` | {c.status} | {c.detail} |")
        return "\n".join(lines) + "\n"

    def raise_if_failed(self) -> None:
        if self.failures:
            first = self.failures[0]
            more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise ValidationFailed(
                f"data validation failed: column {first.column!r}: {first.name}: "
                f"{first.detail}{more}",
                report=self.to_markdown(),
            )


def validate(df: pd.DataFrame, spec: DatasetSpec) -> ValidationReport:
    """The report for the spec's data kind (``driftloop.datakinds``)."""
    from driftloop.datakinds import get_kind

    return get_kind(spec.kind).validate(df, spec)


def validate_tabular(df: pd.DataFrame, spec: DatasetSpec) -> ValidationReport:
    q = spec.quality
    report = ValidationReport(dataset=spec.name, rows=len(df))

    # 1. Missing values and constant columns, per feature.
    for c in spec.features:
        share = float(df[c].isna().mean()) if len(df) else 1.0
        if share == 1.0:
            report.add(
                "missing",
                c,
                False,
                "every value is missing",
                expected=f"at most {q.max_missing_share:.0%} missing",
            )
            continue
        report.add(
            "missing",
            c,
            share <= q.max_missing_share,
            f"{share:.1%} missing",
            expected=f"at most {q.max_missing_share:.0%} (quality.max_missing_share)",
        )
        n_unique = df[c].nunique(dropna=True)
        report.add(
            "constant",
            c,
            n_unique > 1,
            f"{n_unique} distinct value(s)",
            expected="at least 2: a constant column carries no signal",
            warn=True,
        )

    # 2. Numeric features must be finite.
    for c in spec.numeric:
        n_inf = int(np.isinf(df[c].to_numpy(dtype="float64", na_value=np.nan)).sum())
        report.add("finite", c, n_inf == 0, f"{n_inf} infinite value(s)", expected="none")

    # 3. Duplicate rows (features + target + time).
    dup = float(df.duplicated().mean()) if len(df) else 0.0
    report.add(
        "duplicates",
        "*",
        dup <= q.max_duplicate_share,
        f"{dup:.1%} duplicate rows",
        expected=f"at most {q.max_duplicate_share:.0%} (quality.max_duplicate_share)",
    )

    # 4. Physically impossible values (declared ranges) and outliers (a robust z-score).
    for c, bounds in spec.ranges.items():
        _check_range(df[c], c, bounds.min, bounds.max, report)
    for c in spec.numeric:
        _check_outliers(df[c], c, q.outlier_z, report)

    # 5. The time column: holes and repeated timestamps.
    if spec.time.column is not None:
        _check_time(df[TIME], spec, report)

    # 6. The target: present, in range, or a usable label set; 7. enough rows per split.
    check_target_and_splits(df, spec, report)
    return report


def _check_range(
    x: pd.Series, c: str, lo: float | None, hi: float | None, report: ValidationReport
) -> None:
    outside = pd.Series(False, index=x.index)
    if lo is not None:
        outside |= x < lo
    if hi is not None:
        outside |= x > hi
    n = int(outside.sum())
    first = f" (first: {x[outside].iloc[0]:g})" if n else ""
    bounds = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
    report.add(
        "range",
        c,
        n == 0,
        f"{n} value(s) outside {bounds}{first}",
        expected=f"none: ranges.{c} declares them physically impossible",
    )


def _check_outliers(x: pd.Series, c: str, limit: float, report: ValidationReport) -> None:
    values = x.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    dev = np.abs(values - np.median(values))
    q1, q3 = np.percentile(values, [25, 75])
    # The larger of two robust scales: the MAD alone reads a bimodal feature's second mode
    # as outliers (a third of bank marketing's euribor3m); the IQR sees both modes.
    scale = max(MAD_TO_SD * float(np.median(dev)), (q3 - q1) / IQR_TO_SD)
    scale = scale or MEAN_AD_TO_SD * float(dev.mean())
    if scale == 0:  # constant: reported as such
        return
    z = dev / scale
    n = int((z > limit).sum())
    worst = f" (most extreme: {values[int(np.argmax(z))]:g}, z = {z.max():.0f})" if n else ""
    report.add(
        "outliers",
        c,
        n == 0,
        f"{n} value(s) with a robust z-score above {limit:g}{worst}",
        expected=f"none: |x - median| / robust scale <= {limit:g} (quality.outlier_z)",
        warn=True,
    )


def _check_time(t: pd.Series, spec: DatasetSpec, report: ValidationReport) -> None:
    q, column = spec.quality, spec.time.column or TIME
    times = np.sort(t.dropna().to_numpy())
    if times.size < 2:
        return
    steps = np.diff(times)
    positive = steps[steps > np.timedelta64(0)]
    if q.max_gap is not None:
        limit, rule = pd.Timedelta(q.max_gap), f"quality.max_gap {q.max_gap}"
    elif positive.size:
        median = pd.Timedelta(np.median(positive))
        limit, rule = GAP_FACTOR * median, f"{GAP_FACTOR} x the median spacing {_span_of(median)}"
    else:
        limit = None
    if limit is not None:
        n = int((steps > limit.to_timedelta64()).sum())
        i = int(np.argmax(steps))
        a, b = pd.Timestamp(times[i]), pd.Timestamp(times[i + 1])
        largest = (
            f"the largest {_span_of(pd.Timedelta(steps[i]))}, "
            f"from {a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M}"
        )
        report.add(
            "time gaps",
            column,
            n == 0,
            f"{n} gap(s) over {_span_of(limit)}; {largest}",
            expected=f"no gap over {_span_of(limit)} ({rule}; or set quality.max_gap)",
            warn=True,
        )
    if q.unique_times:
        repeated = steps == np.timedelta64(0)
        n = int(repeated.sum())
        first = f" (first: {pd.Timestamp(times[1:][repeated][0])})" if n else ""
        report.add(
            "repeated times",
            column,
            n == 0,
            f"{n} row(s) with the time of the row before{first}",
            expected="one row per time (quality.unique_times: false when several rows "
            "per time are legitimate: events, several entities)",
            warn=True,
        )


def check_target_and_splits(df: pd.DataFrame, spec: DatasetSpec, report: ValidationReport) -> None:
    """The checks every data kind shares: the target, and enough rows in every split."""
    q = spec.quality
    _check_target(df[spec.target], spec, report)
    splits = split_by_time(df, spec)
    for name, part in (
        ("train", splits.train),
        ("validation", splits.validation),
        ("test", splits.test),
    ):
        report.add(
            "rows per split",
            name,
            len(part) >= q.min_rows_per_split,
            f"{len(part)} rows in {name}; {_span(part)}",
            expected=f"at least {q.min_rows_per_split} (quality.min_rows_per_split)",
        )


def _check_target(y: pd.Series, spec: DatasetSpec, report: ValidationReport) -> None:
    q, t = spec.quality, spec.target
    n_missing = int(y.isna().sum())
    report.add(
        "target missing",
        t,
        n_missing == 0,
        f"{n_missing} row(s) without a target",
        expected="a target on every row",
    )
    y = y.dropna()
    if spec.task == "regression":
        values = y.to_numpy(dtype="float64")
        n_inf = int(np.isinf(values).sum())
        report.add(
            "target finite", t, n_inf == 0, f"{n_inf} infinite target value(s)", expected="none"
        )
        if spec.log_target:
            negative = int((values < 0).sum())
            report.add(
                "target range",
                t,
                negative == 0,
                f"{negative} negative value(s)",
                expected="y >= 0: log_target fits log1p(y)",
            )
        if q.target_min is not None:
            below = int((y < q.target_min).sum())
            report.add(
                "target range",
                t,
                below == 0,
                f"{below} value(s) below {q.target_min}",
                expected=f"none below quality.target_min {q.target_min}",
            )
        if q.target_max is not None:
            above = int((y > q.target_max).sum())
            report.add(
                "target range",
                t,
                above == 0,
                f"{above} value(s) above {q.target_max}",
                expected=f"none above quality.target_max {q.target_max}",
            )
        return
    labels = sorted(map(str, y.unique()))
    report.add(
        "label set",
        t,
        len(labels) >= 2,
        f"{len(labels)} class(es): {labels[:10]}",
        expected="at least two: a classifier needs two classes to tell apart",
    )
    if spec.task == "binary":
        report.add(
            "label set",
            t,
            len(labels) <= 2,
            f"{len(labels)} class(es): {labels[:10]}",
            expected="two for a binary task (task: multiclass for more)",
        )
        known = spec.positive_label in labels
        report.add(
            "positive label",
            t,
            known,
            f"positive_label {spec.positive_label!r} is {'' if known else 'not '}one of the "
            f"target's values {labels[:10]}",
            expected="one of them, spelled exactly as in the data",
        )


def _span_of(td: pd.Timedelta) -> str:
    """A duration as people write it: '1d 13h', '30min', '45s'."""
    secs = int(td.total_seconds())
    parts = [(secs // 86400, "d"), (secs % 86400 // 3600, "h"), (secs % 3600 // 60, "min")]
    text = " ".join(f"{n}{unit}" for n, unit in parts if n)
    return text or f"{td.total_seconds():g}s"


def _span(part: pd.DataFrame) -> str:
    if part.empty:
        return "empty"
    return f"{part[TIME].min():%Y-%m-%d %H:%M} .. {part[TIME].max():%Y-%m-%d %H:%M}"
