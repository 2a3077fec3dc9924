"""Dataset specs: how a user brings their own CSV or Parquet, with no code change.

A spec is a small YAML file validated here. Example (``data/bike_sharing.yaml``)::

    name: bike-sharing
    source: {path: bike_sharing_hourly.csv}
    time: {column: dteday, hour_column: hr}
    target: cnt
    task: regression
    numeric: [temp, atemp, hum, windspeed]
    categorical: [season, yr, mnth, hr, holiday, weekday, workingday, weathersit]
    drop: [instant, casual, registered]   # casual + registered == cnt: leakage
    metric: rmse

Relative source paths resolve against the spec file's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftloop.config import read_yaml_mapping, validated

Task = Literal["regression", "binary", "multiclass"]
REGRESSION_METRICS = {"rmse", "mae", "r2"}
CLASSIFICATION_METRICS = {"roc_auc", "f1", "accuracy", "precision", "recall"}
LOWER_IS_BETTER = {"rmse", "mae"}  # every other metric: higher is better


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    path: str  # CSV or Parquet: a path (relative to the spec) or an s3:// URI
    format: Literal["csv", "parquet"] | None = None  # None: from the file suffix
    sep: str = ","
    names: list[str] | None = None  # column names for a header-less CSV


class RowOrderTime(_Strict):
    """For files with no timestamp whose rows are in time order (bank marketing)."""

    start: str  # timestamp of the first row
    step: str = "1h"  # pandas offset between consecutive rows


class TimeSpec(_Strict):
    # Exactly one of `column` or `row_order`. `hour_column` adds hours to a date column
    # (bike sharing keeps the date in `dteday` and the hour in `hr`).
    column: str | None = None
    hour_column: str | None = None
    format: str | None = None  # strftime format of `column`; None lets pandas infer ISO
    row_order: RowOrderTime | None = None

    @model_validator(mode="after")
    def _one_way(self) -> TimeSpec:
        if (self.column is None) == (self.row_order is None):
            raise ValueError("time needs exactly one of `column` or `row_order`")
        if self.hour_column and not self.column:
            raise ValueError("time.hour_column needs time.column")
        return self


class SplitSpec(_Strict):
    # Time-ordered fractions of the training window; test is the latest slice. 15 % each
    # keeps a few weeks of hourly data for early stopping and for the gate.
    validation: float = Field(0.15, gt=0, lt=0.5)
    test: float = Field(0.15, gt=0, lt=0.5)


class QualitySpec(_Strict):
    # A column more than half missing carries too little signal to impute honestly.
    max_missing_share: float = Field(0.5, ge=0, le=1)
    # Exact duplicate rows above 10 % usually mean a broken export, not real traffic.
    max_duplicate_share: float = Field(0.1, ge=0, le=1)
    # Fewer rows than this per split makes early stopping and the gate noise.
    min_rows_per_split: int = Field(100, ge=1)
    target_min: float | None = None  # e.g. 0 for counts
    target_max: float | None = None


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS label: it names
    source: Source  #                                                 the InferenceService too
    time: TimeSpec
    target: str
    task: Task
    numeric: list[str] = []
    categorical: list[str] = []
    drop: list[str] = []
    metric: str
    positive_label: str | None = None  # binary: the class whose probability is predicted
    log_target: bool = False  # regression on counts: fit log1p(y), report on y
    unknown_category: Literal["bucket", "reject"] = "bucket"  # at serving time
    rules: str | None = None  # optional business-rules YAML, shipped with every version
    split: SplitSpec = Field(default_factory=SplitSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    base_dir: Path = Path(".")  # set by load_spec; relative paths resolve here

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        features = self.numeric + self.categorical
        if not features:
            raise ValueError("declare at least one numeric or categorical feature")
        dupes = {c for c in features if features.count(c) > 1}
        if dupes:
            raise ValueError(f"columns listed twice: {sorted(dupes)}")
        if self.target in features or self.target in self.drop:
            raise ValueError(f"target {self.target!r} cannot also be a feature or dropped")
        if leak := set(features) & set(self.drop):
            raise ValueError(f"columns both used and dropped: {sorted(leak)}")
        allowed = REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS
        if self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} does not fit task {self.task}: {allowed}")
        if self.task == "binary" and self.positive_label is None:
            raise ValueError("a binary task needs positive_label (the class to predict)")
        if self.log_target and self.task != "regression":
            raise ValueError("log_target applies to regression only")
        return self

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def source_uri(self) -> str:
        return self._resolve(self.source.path)

    @property
    def rules_uri(self) -> str | None:
        return None if self.rules is None else self._resolve(self.rules)

    def _resolve(self, p: str) -> str:
        """An s3:// URI or absolute path as it is; a relative path against the spec's
        directory."""
        if "://" in p or Path(p).is_absolute():
            return p
        return str((self.base_dir / p).resolve())

    @property
    def local_files(self) -> list[str]:
        """The files this spec names on this machine's disk (not in an object store)."""
        uris = [self.source_uri] + ([self.rules_uri] if self.rules_uri else [])
        return [u for u in uris if "://" not in u or u.startswith("file://")]


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a spec; any problem is one ConfigError naming the field."""
    raw = read_yaml_mapping(path, "dataset spec")
    return parse_spec(raw, base_dir=Path(path).resolve().parent, origin=str(path))


def parse_spec(raw: dict, base_dir: Path, origin: str = "spec") -> DatasetSpec:
    return validated(DatasetSpec, {**raw, "base_dir": base_dir}, f"dataset spec {origin}")
