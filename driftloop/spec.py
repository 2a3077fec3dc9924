"""Dataset specs: how a user brings their own data, with no code change.

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

**Data kinds.** ``kind`` says what a row is: ``tabular`` (the default, so a spec without
``kind`` is tabular: named numeric and categorical columns) or ``image`` (one image per
row, with the options in the ``image`` section). Each kind has its loader, validation and
baselines in ``driftloop/datakinds/<kind>.py`` and its input schema in
``driftloop/formats.py``; a kind-specific section of the spec (``image:``) is validated
here. Example (``data/digits.yaml``)::

    name: digits
    kind: image
    source: {path: digits, format: sklearn}    # or a folder, a CSV of paths, a Parquet
    time: {row_order: {start: "2024-01-01", step: 1h}}
    target: digit
    task: multiclass
    metric: accuracy

``kind: interactions`` is a recommender's data: one user-item interaction per row (user,
item, time, an optional rating), options in ``interactions`` (``driftloop.datakinds.
interactions``); the target is the item column (feedback labels are items), the task
``ranking``. Example (``data/movielens_100k.yaml``)::

    name: movielens-100k
    kind: interactions
    source: {path: ml-100k, format: recbole}   # or a CSV / Parquet of interactions
    time: {column: timestamp}                  # numbers are Unix seconds
    task: ranking
    metric: ndcg10
    interactions: {user: user_id, item: item_id, rating: rating}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftloop.config import read_yaml_mapping, validated

Task = Literal["regression", "binary", "multiclass", "ranking"]
Kind = Literal["tabular", "image", "interactions"]  # one module per kind in driftloop/datakinds/
REGRESSION_METRICS = {"rmse", "mae", "r2"}
CLASSIFICATION_METRICS = {"roc_auc", "f1", "accuracy", "precision", "recall"}
# Top-10 ranking metrics (driftloop.recsys_metrics), all higher-is-better.
RANKING_METRICS = {"ndcg10", "recall10", "hitrate10", "map10"}
LOWER_IS_BETTER = {"rmse", "mae"}  # every other metric: higher is better


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    path: str  # CSV or Parquet: a path (relative to the spec) or an s3:// URI
    # None: from the file suffix (a directory: `folder`). `folder` (images in one
    # subfolder per label) and `sklearn` (a dataset bundled with scikit-learn, `path`
    # names it: `digits`) are for image data.
    # `recbole` (interactions): a dataset shipped inside the installed recbole wheel, read
    # in place (`path` names it: `ml-100k`).
    format: Literal["csv", "parquet", "folder", "sklearn", "recbole"] | None = None
    sep: str = ","
    names: list[str] | None = None  # column names for a header-less CSV


SKLEARN_DATASETS = ("digits",)  # bundled with scikit-learn: read at run time, never copied
RECBOLE_DATASETS = ("ml-100k",)  # shipped inside the recbole wheel: read in place, never copied
BUNDLED_FORMATS = ("sklearn", "recbole")  # a source named, not located: nothing to upload


class InteractionOptions(_Strict):
    """``interactions:``: a recommender's columns (``kind: interactions``). Ids may be
    strings or integers (both are served as strings); the item column is the target."""

    user: str = "user_id"
    item: str = "item_id"
    # Optional: an explicit rating or a weight. With `min_rating`, rows rated below it are
    # not positive feedback and are dropped when read (MovieLens: 4 keeps "liked").
    rating: str | None = None
    min_rating: float | None = None
    # A numeric time column counts this unit since 1970-01-01 (MovieLens: seconds).
    time_unit: Literal["s", "ms"] = "s"

    @model_validator(mode="after")
    def _columns(self) -> InteractionOptions:
        named = [c for c in (self.user, self.item, self.rating) if c]
        if len(set(named)) != len(named):
            raise ValueError(f"interactions: user, item and rating must differ, got {named}")
        if self.min_rating is not None and self.rating is None:
            raise ValueError("interactions.min_rating needs interactions.rating")
        return self


class ImageOptions(_Strict):
    """``image:``: how image rows are read and what the model sees (``kind: image``)."""

    # [height, width] the model sees. None: the images' own size (then all must agree).
    # A size larger than an image is refused unless `upscale`: enlarging invents detail.
    size: tuple[int, int] | None = None
    upscale: bool = False
    # How an image of another size is brought to `size`: `stretch` (resize both sides,
    # bilinear) or `crop` (scale the shorter side to fit, then cut the centre).
    resize: Literal["stretch", "crop"] = "stretch"
    # 1 (grey) or 3 (RGB). None: from the images, which must then all agree; mixed grey
    # and colour images are refused unless this says which to convert them to.
    channels: Literal[1, 3] | None = None
    # A CSV source: the column of image paths (relative to the CSV's directory).
    path_column: str = "path"
    # A Parquet source: the column of encoded PNG/JPEG bytes.
    bytes_column: str = "image"
    # A folder source: the file suffixes read (case-insensitive); other files are ignored.
    extensions: list[str] = [".png", ".jpg", ".jpeg"]
    # An image above this many pixels (height x width) is refused at load and at serving:
    # a decompression bomb or a mistake, not a training example.
    max_pixels: int = Field(4096 * 4096, ge=1)

    @model_validator(mode="after")
    def _positive(self) -> ImageOptions:
        if self.size is not None and min(self.size) < 1:
            raise ValueError(f"image.size must be two positive integers, got {list(self.size)}")
        return self


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
            given = "both" if self.column is not None else "neither"
            raise ValueError(f"time needs exactly one of `column` or `row_order`, got {given}")
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
    # The largest gap between consecutive times that is not a hole in the data (a pandas
    # offset: "1d"). None infers it: GAP_FACTOR (24) times the median spacing, so hourly
    # data may miss most of a day and daily data three weeks before a warning.
    max_gap: str | None = None
    # One row per time (a time series): a repeated timestamp is warned about. False for
    # data with several rows per time (events, several stores or sensors per timestamp).
    unique_times: bool = True
    # A numeric value whose robust z-score, |x - median| / (1.4826 * MAD, or IQR / 1.349
    # if larger), exceeds this is warned about as an outlier (driftloop.validation). 10, not
    # the textbook 3.5: real features are heavy-tailed (counts, durations), and a warning
    # on 1 % of every column would be read by no one.
    outlier_z: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _gap(self) -> QualitySpec:
        if self.max_gap is not None:
            import pandas as pd

            try:
                gap = pd.to_timedelta(self.max_gap)
            except ValueError as e:
                raise ValueError(
                    f"quality.max_gap {self.max_gap!r} is not a duration (e.g. '1d', '6h')"
                ) from e
            if gap <= pd.Timedelta(0):
                raise ValueError(f"quality.max_gap {self.max_gap!r} must be positive")
        return self


class Range(_Strict):
    """``ranges: {column: {min, max}}``: the values a numeric feature can physically take
    (0 K is no temperature); a value outside fails validation. Either bound may be left out."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS label: it names
    kind: Kind = "tabular"  #                                       the InferenceService too
    source: Source
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
    ranges: dict[str, Range] = {}  # numeric feature -> its physically possible values
    image: ImageOptions | None = None  # kind: image (filled with the defaults when absent)
    interactions: InteractionOptions | None = None  # kind: interactions (likewise)
    base_dir: Path = Path(".")  # set by load_spec; relative paths resolve here

    @model_validator(mode="before")
    @classmethod
    def _kind_sections(cls, raw: object) -> object:
        """A kind's own section defaults to its defaults (``kind: image`` needs no
        ``image:``), and belongs to that kind only."""
        if not isinstance(raw, dict):
            return raw
        kind = raw.get("kind", "tabular")
        for section in ("image", "interactions"):
            if kind == section and raw.get(section) is None:
                raw = {**raw, section: {}}
            if kind != section and raw.get(section) is not None:
                raise ValueError(f"an `{section}:` section needs `kind: {section}`")
        if kind == "interactions" and "target" not in raw:
            # The item column is what a recommender predicts, and what feedback labels hold.
            given = raw["interactions"] if isinstance(raw["interactions"], dict) else {}
            raw = {**raw, "target": given.get("item", InteractionOptions().item)}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.source.format in ("folder", "sklearn") and self.kind != "image":
            raise ValueError(f"source.format {self.source.format} holds images: add `kind: image`")
        if self.source.format == "recbole" and self.kind != "interactions":
            raise ValueError("source.format recbole holds interactions: add `kind: interactions`")
        if self.kind == "image":
            return self._image()
        if self.kind == "interactions":
            return self._interactions()
        if self.task == "ranking":
            raise ValueError("task ranking needs `kind: interactions` (user-item interactions)")
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
        if stray := sorted(set(self.ranges) - set(self.numeric)):
            raise ValueError(
                f"ranges name {stray}, which are not numeric features {self.numeric} "
                "(the target's range is quality.target_min / target_max)"
            )
        allowed = REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS
        if self.metric not in allowed:
            raise ValueError(
                f"metric {self.metric!r} does not fit task {self.task}: one of {sorted(allowed)}"
            )
        if self.task == "binary" and self.positive_label is None:
            raise ValueError("a binary task needs positive_label (the class to predict)")
        if self.log_target and self.task != "regression":
            raise ValueError(f"log_target applies to regression only, not task {self.task}")
        return self

    def _image(self) -> DatasetSpec:
        """``kind: image``: one image per row, labelled; no tabular columns."""
        if (
            tabular := [k for k in ("numeric", "categorical", "drop", "ranges") if getattr(self, k)]
            + (["log_target"] if self.log_target else [])
            + (["rules"] if self.rules else [])
        ):
            raise ValueError(f"{', '.join(tabular)} apply to tabular data, not kind: image")
        if self.target == "image":
            raise ValueError("target `image` is the name of the image column: name it otherwise")
        if self.task == "regression":
            raise ValueError("kind: image supports the binary and multiclass tasks")
        if self.metric not in CLASSIFICATION_METRICS:
            raise ValueError(
                f"metric {self.metric!r} does not fit task {self.task}: "
                f"one of {sorted(CLASSIFICATION_METRICS)}"
            )
        if self.task == "binary" and self.positive_label is None:
            raise ValueError("a binary task needs positive_label (the class to predict)")
        fmt = self.source.format
        if fmt == "sklearn" and self.source.path not in SKLEARN_DATASETS:
            raise ValueError(
                f"source.path {self.source.path!r}: scikit-learn image datasets are "
                f"{list(SKLEARN_DATASETS)}"
            )
        if fmt == "folder" and self.time.column is not None:
            raise ValueError("an image folder has no columns: use time.row_order (file order)")
        return self

    def _interactions(self) -> DatasetSpec:
        """``kind: interactions``: user, item, time (and a rating); no tabular columns."""
        opts = self.interaction_options
        if (
            tabular := [k for k in ("numeric", "categorical", "drop", "ranges") if getattr(self, k)]
            + (["log_target"] if self.log_target else [])
            + (["rules"] if self.rules else [])
        ):
            raise ValueError(f"{', '.join(tabular)} apply to tabular data, not kind: interactions")
        if self.task != "ranking":
            raise ValueError(f"kind: interactions learns task ranking, not {self.task}")
        if self.target != opts.item:
            raise ValueError(
                f"target {self.target!r}: a recommender predicts the item column "
                f"(interactions.item: {opts.item!r}); leave target out or name that column"
            )
        if self.metric not in RANKING_METRICS:
            raise ValueError(
                f"metric {self.metric!r} does not fit task ranking: "
                f"one of {sorted(RANKING_METRICS)}"
            )
        if self.time.column is None:
            raise ValueError(
                "kind: interactions needs time.column: recommendations are trained and "
                "judged in time order, and each interaction's time says when it happened"
            )
        if self.time.column in (opts.user, opts.item, opts.rating):
            raise ValueError(f"time.column {self.time.column!r} is also an id or rating column")
        if self.source.format == "recbole" and self.source.path not in RECBOLE_DATASETS:
            raise ValueError(
                f"source.path {self.source.path!r}: recbole datasets are {list(RECBOLE_DATASETS)}"
            )
        return self

    @property
    def interaction_options(self) -> InteractionOptions:
        """The ``interactions:`` section (``kind: interactions`` only)."""
        if self.interactions is None:
            raise ValueError(f"dataset {self.name} is of kind {self.kind}, not interactions")
        return self.interactions

    @property
    def bundled(self) -> bool:
        """A dataset shipped inside an installed package: named, not located."""
        return self.source.format in BUNDLED_FORMATS

    @property
    def image_options(self) -> ImageOptions:
        """The ``image:`` section (``kind: image`` only)."""
        if self.image is None:
            raise ValueError(f"dataset {self.name} is of kind {self.kind}, not image")
        return self.image

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def source_uri(self) -> str:
        if self.bundled:  # read from the installed package
            return f"{self.source.format}:{self.source.path}"
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
        return [
            u
            for u in uris
            if not u.startswith(tuple(f"{b}:" for b in BUNDLED_FORMATS))
            and ("://" not in u or u.startswith("file://"))
        ]


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a spec; any problem is one ConfigError naming the field."""
    raw = read_yaml_mapping(path, "dataset spec")
    return parse_spec(raw, base_dir=Path(path).resolve().parent, origin=str(path))


def parse_spec(raw: dict, base_dir: Path, origin: str = "spec") -> DatasetSpec:
    return validated(DatasetSpec, {**raw, "base_dir": base_dir}, f"dataset spec {origin}")
