"""The validation gate: schema and quality checks before any training.

``validate(df, spec)`` returns a report with one line per check and column; the pipeline
writes it as a Markdown artifact (visible in the KFP UI) and stops with a column-level
message when any check fails. Constant columns are reported as warnings, not failures:
a training window inside one year makes bike sharing's ``yr`` constant, legitimately.
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

    # 4. The target: present, in range, or a usable label set; 5. enough rows per split.
    check_target_and_splits(df, spec, report)
    return report


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


def _span(part: pd.DataFrame) -> str:
    if part.empty:
        return "empty"
    return f"{part[TIME].min():%Y-%m-%d %H:%M} .. {part[TIME].max():%Y-%m-%d %H:%M}"
