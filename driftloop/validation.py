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
    name: str
    column: str
    status: Status
    detail: str


@dataclass
class ValidationReport:
    dataset: str
    rows: int
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def add(self, name: str, column: str, ok: bool, detail: str, *, warn: bool = False) -> None:
        status: Status = "pass" if ok else ("warn" if warn else "fail")
        self.checks.append(Check(name, column, status, detail))

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
            report.add("missing", c, False, "every value is missing")
            continue
        report.add(
            "missing",
            c,
            share <= q.max_missing_share,
            f"{share:.1%} missing (max {q.max_missing_share:.0%})",
        )
        n_unique = df[c].nunique(dropna=True)
        report.add("constant", c, n_unique > 1, f"{n_unique} distinct value(s)", warn=True)

    # 2. Numeric features must be finite.
    for c in spec.numeric:
        n_inf = int(np.isinf(df[c].to_numpy(dtype="float64", na_value=np.nan)).sum())
        report.add("finite", c, n_inf == 0, f"{n_inf} infinite value(s)")

    # 3. Duplicate rows (features + target + time).
    dup = float(df.duplicated().mean()) if len(df) else 0.0
    report.add(
        "duplicates",
        "*",
        dup <= q.max_duplicate_share,
        f"{dup:.1%} duplicate rows (max {q.max_duplicate_share:.0%})",
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
            f"{len(part)} rows in {name} (min {q.min_rows_per_split}); {_span(part)}",
        )


def _check_target(y: pd.Series, spec: DatasetSpec, report: ValidationReport) -> None:
    q, t = spec.quality, spec.target
    n_missing = int(y.isna().sum())
    report.add("target missing", t, n_missing == 0, f"{n_missing} row(s) without a target")
    y = y.dropna()
    if spec.task == "regression":
        values = y.to_numpy(dtype="float64")
        n_inf = int(np.isinf(values).sum())
        report.add("target finite", t, n_inf == 0, f"{n_inf} infinite target value(s)")
        if spec.log_target:
            negative = int((values < 0).sum())
            report.add(
                "target range",
                t,
                negative == 0,
                f"{negative} negative value(s): log_target fits log1p(y), which needs y >= 0",
            )
        if q.target_min is not None:
            below = int((y < q.target_min).sum())
            report.add("target range", t, below == 0, f"{below} value(s) below {q.target_min}")
        if q.target_max is not None:
            above = int((y > q.target_max).sum())
            report.add("target range", t, above == 0, f"{above} value(s) above {q.target_max}")
        return
    labels = sorted(map(str, y.unique()))
    report.add(
        "label set",
        t,
        len(labels) >= 2,
        f"{len(labels)} class(es): {labels[:10]}; a classifier needs at least two",
    )
    if spec.task == "binary":
        report.add("label set", t, len(labels) <= 2, f"binary task but labels are {labels[:10]}")
        report.add(
            "positive label",
            t,
            spec.positive_label in labels,
            f"positive_label {spec.positive_label!r} in {labels[:10]}",
        )


def _span(part: pd.DataFrame) -> str:
    if part.empty:
        return "empty"
    return f"{part[TIME].min():%Y-%m-%d %H:%M} .. {part[TIME].max():%Y-%m-%d %H:%M}"
