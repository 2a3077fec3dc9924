"""Every format driftloop keeps in the store, typed, in one module.

The store is the contract between the parts (pipeline steps, predictor, collector, drift
job), so each object it holds has exactly one definition here: its key, its file name and
a pydantic model that writes it and reads it back. Nothing else in driftloop spells a
store key or parses one of these JSON documents by hand.

Layout (``models/<model>/...``, ``logs/...``, ``labels/...``, ``monitoring/<model>/...``)::

    models/<m>/versions/<n>/        VersionFiles: immutable once COMMITTED exists
        manifest.json               Manifest: family, sha256 of every file, lineage
        schema.json                 InputSchema: the input contract the predictor enforces
        metrics.json                VersionMetrics: test metrics, baselines, champion, gate
        <family files>              e.g. model.safetensors, preprocessor.json (the family's)
    models/<m>/aliases.json         Aliases: production and previous, one atomic object
    logs/<m>/v<n>/<endpoint>/date=YYYY-MM-DD/<uuid>.parquet    LOG_FIELDS (payloads.py)
    logs/<m>/halves/request/date=<event date>/<uuid>.parquet   HALF_FIELDS: unpaired halves,
    logs/<m>/halves/response/date=<receive date>/<uuid>.parquet   paired when logs are read
    labels/<m>/date=YYYY-MM-DD/<uuid>.parquet                 LABEL_FIELDS
    monitoring/<m>/windows/<endpoint>-<start>-<end>/summary.json   WindowRecord
    monitoring/<m>/triggers/<id>.json                              TriggerRecord
    monitoring/<m>/leases/<n>.json, <n>.done                       Lease
    datasets/<sha256>/<file name>   a spec's data or rules, uploaded by `pipeline submit`

Versions written by driftloop 0.1.0 still load: their manifest names no family (all were
``tabular-torch``), their schema no kind (all were tabular) and their aliases were two
objects (``aliases/production.json``, ``aliases/previous.json``); see ``Aliases.migrate``.
``tests/fixtures/store-0.1.0`` is such a store, written by that release.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from driftloop import values
from driftloop.errors import IntegrityError

# Families of versions written before the registry recorded one: the only one there was.
LEGACY_FAMILY = "tabular-torch"


class _Format(BaseModel):
    """Strict: a key we do not know is a format we do not understand."""

    # NaN metrics (ROC-AUC of a one-class window) are written as NaN, not null.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    @classmethod
    def parse(cls, data: bytes | str | dict, where: str) -> Any:
        """Read one stored document; a malformed one is an IntegrityError naming ``where``."""
        try:
            if isinstance(data, dict):
                return cls.model_validate(data)
            return cls.model_validate_json(data)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise IntegrityError(
                f"{where} is not a valid {cls.__name__}: {loc}: {first['msg']}"
            ) from e

    def dump(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


# -- keys ---------------------------------------------------------------------------------
class VersionFiles:
    """File names inside a version directory that every family shares. Families declare
    their own model files (``ModelFamily.files``)."""

    MANIFEST = "manifest.json"
    COMMITTED = "COMMITTED"  # written last: a version without it does not exist
    CLAIM = "CLAIM"  # exclusive create: allocates the version number to one writer
    SCHEMA = "schema.json"
    METRICS = "metrics.json"
    CARD = "card.md"
    RULES = "rules.yaml"
    DATASET = "dataset.yaml"  # the spec it was trained from: retraining starts from it
    REFERENCE_SAMPLE = "reference/sample.parquet"  # training rows + predictions, for drift
    REFERENCE_STATS = "reference/stats.json"  # their statistics, precomputed for drift


def version_prefix(model: str, version: int) -> str:
    return f"models/{model}/versions/{version}"


def versions_prefix(model: str) -> str:
    return f"models/{model}/versions"


def aliases_key(model: str) -> str:
    return f"models/{model}/aliases.json"


def legacy_alias_key(model: str, name: str) -> str:
    """Where driftloop 0.1.0 kept one alias per object (read for migration only)."""
    return f"models/{model}/aliases/{name}.json"


def gates_prefix(model: str) -> str:
    return f"models/{model}/gates"


def gate_key(model: str, created: str, run_id: str) -> str:
    """``<created>-<run>.json``: sorts by time; the run id keeps two runs apart."""
    stamp = re.sub(r"[^0-9]", "", created)[:14]
    run = re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)[:128] or "run"
    return f"models/{model}/gates/{stamp}-{run}.json"


def monitoring_prefix(model: str) -> str:
    return f"monitoring/{model}"


def window_prefix(model: str, window_id: str) -> str:
    return f"monitoring/{model}/windows/{window_id}"


def windows_prefix(model: str) -> str:
    return f"monitoring/{model}/windows"


WINDOW_SUMMARY = "summary.json"
WINDOW_REPORT = "report.html"


def window_id(endpoint: str, start: datetime, end: datetime) -> str:
    """``<endpoint>-<start>-<end>`` to the minute: sorts by time within an endpoint."""
    return f"{endpoint}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"


_WINDOW_ID = re.compile(r"^(?P<endpoint>.+)-(?P<start>\d{8}T\d{4})-(?P<end>\d{8}T\d{4})$")


def parse_window_id(wid: str) -> tuple[str, datetime, datetime] | None:
    """(endpoint, start, end) of a window id; None if it is not one."""
    m = _WINDOW_ID.match(wid)
    if m is None:
        return None
    fmt = "%Y%m%dT%H%M"
    return (
        m["endpoint"],
        datetime.strptime(m["start"], fmt),
        datetime.strptime(m["end"], fmt),
    )


DATA_QUALITY_REPORT = "data-quality.md"  # the validate step's report, kept per run


def run_file_key(model: str, run_id: str, name: str) -> str:
    """What a training run keeps once its step outputs are gone (a local run's are
    removed after success): ``runs/<model>/<run id>/<name>``."""
    return f"runs/{model}/{run_id}/{name}"


def trigger_key(model: str, trigger_id: str) -> str:
    return f"monitoring/{model}/triggers/{trigger_id}.json"


def triggers_prefix(model: str) -> str:
    return f"monitoring/{model}/triggers"


def leases_prefix(model: str) -> str:
    return f"monitoring/{model}/leases"


def lease_key(model: str, generation: int, done: bool = False) -> str:
    return f"monitoring/{model}/leases/{generation:08d}.{'done' if done else 'json'}"


# -- a version: manifest, schema, metrics ---------------------------------------------------
class FileEntry(_Format):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


def safe_relative(name: str) -> str:
    """A file name inside a version directory: relative, normalised, no ``..``; anything
    else would let a manifest write outside the directory it is downloaded to."""
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or posixpath.normpath(name) != name
        or name.split("/")[0] == ".."
    ):
        raise ValueError(f"file name {name!r} is not a relative, normalised path")
    return name


class TimeWindow(_Format):
    """A half-open interval ``[start, end)``; either side may be open ("")."""

    start: str = ""
    end: str = ""


class Evaluation(_Format):
    baselines: dict[str, dict[str, float]] = {}
    champion: dict[str, Any] | None = None
    gate: str = ""


class Lineage(_Format):
    """Where a version came from: data, window, code, run and the trigger it answers."""

    window: TimeWindow = TimeWindow()
    dataset_sha256: str = ""
    run_id: str = ""
    trigger_id: str = ""
    evaluation: Evaluation = Evaluation()
    params: dict[str, Any] = {}
    epochs: int | None = None
    code_version: str = ""
    dataset: str = ""
    train_rows: int | None = None


class Manifest(_Format):
    model: str
    version: int = Field(ge=1)
    created: str
    family: str = LEGACY_FAMILY
    files: dict[str, FileEntry]
    lineage: Lineage = Lineage()

    @field_validator("files")
    @classmethod
    def _relative_names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            safe_relative(name)
        return files


class FeatureSchema(_Format):
    name: str
    kind: Literal["numeric", "categorical"]
    datatype: str  # the V2 datatype the metadata advertises: FP64 or BYTES
    categories: list[str] | None = None  # categorical: the values seen in training
    _category_set: frozenset[str] | None = PrivateAttr(default=None)

    @property
    def category_set(self) -> frozenset[str]:
        """``categories`` as a set, built once (the predictor checks membership per value)."""
        if self._category_set is None:
            self._category_set = frozenset(self.categories or ())
        return self._category_set


class TabularSchema(_Format):
    """The input contract of a tabular model: one named column per feature (each is also
    one column of the payload log)."""

    kind: Literal["tabular"] = "tabular"
    model: str
    task: Literal["regression", "binary", "multiclass"]
    target: str
    features: list[FeatureSchema]
    unknown_category: Literal["bucket", "reject"] = "bucket"
    classes: list[str] = []
    positive_label: str | None = None
    threshold: float = 0.5

    @classmethod
    def of_columns(
        cls,
        numeric: list[str],
        categorical: list[str],
        model: str = "model",
        task: Literal["regression", "binary", "multiclass"] = "regression",
        target: str = "target",
    ) -> TabularSchema:
        """A schema naming only columns and their kinds (drift on a bare frame)."""
        feats = [FeatureSchema(name=c, kind="numeric", datatype="FP64") for c in numeric]
        feats += [FeatureSchema(name=c, kind="categorical", datatype="BYTES") for c in categorical]
        return cls(model=model, task=task, target=target, features=feats)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def kinds(self) -> dict[str, str]:
        return {f.name: f.kind for f in self.features}

    @property
    def inputs(self) -> list[str]:
        """The inputs a request carries (``FittedModel.inputs``): the features."""
        return self.names

    @property
    def drift_columns(self) -> list[str]:
        """What the drift job reports per column (policy ``key_features``): the features."""
        return self.names


class ImageTensor(_Format):
    """The image input a request carries: a float tensor, or encoded PNG/JPEG bytes."""

    name: str = "image"  # V2: the FP32 tensor [N, C, H, W]; V1: nested lists
    datatype: Literal["FP32"] = "FP32"
    shape: list[int] = Field(min_length=3, max_length=3)  # [C, H, W] of one image
    value_range: tuple[float, float] = (0.0, 1.0)  # pixel values: 0 black, 1 white
    layout: Literal["NCHW"] = "NCHW"
    bytes_name: str = "image_bytes"  # V2: a BYTES input of encoded images; V1 {"b64": ...}
    # Encoded images are resized like the training data (the dataset spec's image options).
    resize: Literal["stretch", "crop"] = "stretch"
    upscale: bool = False
    max_bytes: int = Field(8 * 2**20, ge=1)  # one encoded image; larger is a 413-style 400
    max_pixels: int = Field(4096 * 4096, ge=1)  # decoded height x width, checked before pixels


class ImageSchema(_Format):
    """The input contract of an image model, and what its payload log keeps.

    The request carries ``input`` (a tensor or encoded images). The log does not keep the
    pixels: it keeps ``logged``, the model's embedding (``emb_0`` ..) and a few image
    statistics, one numeric column each (``names`` / ``kinds``, as a tabular schema's
    features), which is what the drift job watches."""

    kind: Literal["image"]
    model: str
    task: Literal["binary", "multiclass"]
    target: str
    input: ImageTensor
    classes: list[str]
    positive_label: str | None = None
    threshold: float = 0.5
    top_k: int = Field(5, ge=1)  # classes with their probabilities in each response
    embedding: list[str]  # the embedding's log columns, in order
    statistics: list[str]  # the image statistics' log columns (driftloop.images)

    @property
    def names(self) -> list[str]:
        """The payload log's columns standing for the input: embedding, then statistics."""
        return [*self.embedding, *self.statistics]

    @property
    def kinds(self) -> dict[str, str]:
        return dict.fromkeys(self.names, "numeric")

    @property
    def inputs(self) -> list[str]:
        return [self.input.name]

    @property
    def drift_columns(self) -> list[str]:
        """The embedding as one signal, then each statistic."""
        return ["embedding", *self.statistics]


# What a recommender's payload log keeps per request (``FittedModel.predict_logged``), the
# same for every interactions model: its columns and their kinds.
RECSYS_LOG_COLUMNS: dict[str, str] = {
    "user_id": "categorical",  # as the request named the user
    "user_activity": "categorical",  # the user's training-activity bucket; "new": unknown
    "items": "categorical",  # the response's ranked items, a JSON list
    "score": "numeric",  # the top item's score (null for the popularity fallback)
}


class InteractionsSchema(_Format):
    """The input contract of a recommender, and what its payload log keeps.

    A request names a user (``user_id``, a string or an integer) and optionally ``k`` (1 ..
    ``max_k``) and ``exclude_seen``; the response ranks items. The log keeps the user, their
    activity bucket, the ranked items and the top score (``RECSYS_LOG_COLUMNS``); feedback
    labels are items (``target``, the item column), joined to the logged list by request id."""

    kind: Literal["interactions"]
    model: str
    task: Literal["ranking"] = "ranking"
    target: str  # the item column: a feedback label is the item a user then interacted with
    user: str  # the user column of the training data (requests name it `user_id`)
    k: int = Field(10, ge=1)  # the list length when a request asks for none
    max_k: int = Field(ge=1)  # the longest list a request may ask for
    users: int = Field(ge=0)  # users the model knows (others get the popularity fallback)
    items: int = Field(ge=1)  # the catalogue: items the model can recommend
    activity: list[str]  # user-activity buckets, lightest first; "new" is an unknown user
    classes: list[str] = []
    positive_label: str | None = None
    threshold: float = 0.5

    @property
    def names(self) -> list[str]:
        return list(RECSYS_LOG_COLUMNS)

    @property
    def kinds(self) -> dict[str, str]:
        return dict(RECSYS_LOG_COLUMNS)

    @property
    def inputs(self) -> list[str]:
        return [self.user]

    @property
    def drift_columns(self) -> list[str]:
        """Popularity drift and new items on feedback, user activity and new users on
        requests (``driftloop.recsys_drift``)."""
        return ["item_popularity", "new_items", "user_activity", "new_users"]


def _schema_kind(data: Any) -> str:
    kind = data.get("kind", "tabular") if isinstance(data, dict) else getattr(data, "kind", None)
    return kind if isinstance(kind, str) else "tabular"


# The input schema of any family: a union on ``kind``. A schema without ``kind`` (every
# version written before there were other kinds) is tabular. Every member has ``kind``,
# ``model``, ``task``, ``target``, ``classes``, ``positive_label``, ``threshold`` and:
#   names / kinds    the payload log's columns standing for the inputs (name -> numeric |
#                    categorical): what the collector writes and the drift job reads
#   inputs           what a request carries (FittedModel.inputs)
#   drift_columns    what the drift job reports one decision for (policy key_features)
# A new data kind adds its class here, tagged with its name.
InputSchema = Annotated[
    Annotated[TabularSchema, Tag("tabular")]
    | Annotated[ImageSchema, Tag("image")]
    | Annotated[InteractionsSchema, Tag("interactions")],
    Discriminator(_schema_kind),
]
_INPUT_SCHEMA: TypeAdapter[InputSchema] = TypeAdapter(InputSchema)


def parse_schema(data: bytes | str | dict, where: str) -> InputSchema:
    """Any stored ``schema.json``; IntegrityError naming ``where`` when malformed."""
    try:
        if isinstance(data, dict):
            return _INPUT_SCHEMA.validate_python(data)
        return _INPUT_SCHEMA.validate_json(data)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "union_tag_invalid":
            raise IntegrityError(
                f"{where}: unknown input kind {first.get('input', {}).get('kind')!r}; this "
                "driftloop knows tabular, image and interactions (upgrade driftloop to serve it)"
            ) from e
        loc = ".".join(str(p) for p in first["loc"][1:]) or "(top level)"
        raise IntegrityError(f"{where} is not a valid input schema: {loc}: {first['msg']}") from e


GateVerdict = Literal["promote", "restore", "refuse"]


class GateRecord(_Format):
    """``models/<model>/gates/<created>-<run>.json``: what the gate of one training run saw
    and decided, kept whatever the verdict (a refused challenger registers nothing, so this
    is the only trace of why). The trigger that started the run links to it."""

    model: str
    run_id: str
    trigger_id: str = ""
    created: str
    verdict: GateVerdict
    metric: str
    challenger: float
    family: str  # the challenger's
    champion: float | None = None
    champion_version: int | None = None
    floor: float | None = None
    restore: int | None = None  # the earlier version served again, when ``restore``
    earlier: dict[str, float] = {}  # earlier versions' scores on the same window ("3": 61.2)
    baselines: dict[str, dict[str, float]] = {}
    reasons: list[str]

    @property
    def summary(self) -> str:
        return f"{self.verdict}: " + "; ".join(self.reasons)


class VersionMetrics(_Format):
    """``metrics.json``: the test window's metrics and the evidence the gate saw."""

    test: dict[str, float]
    baselines: dict[str, dict[str, float]] = {}
    champion: dict[str, Any] | None = None
    gate: str = ""


# -- aliases ------------------------------------------------------------------------------
class Alias(_Format):
    version: int = Field(ge=1)
    updated: str
    reason: str = ""


class Aliases(_Format):
    """Both pointers of a model in one object, so promote and rollback are one write."""

    production: Alias | None = None
    previous: Alias | None = None

    def get(self, name: str) -> int | None:
        alias = getattr(self, name, None) if name in ALIAS_NAMES else None
        return alias.version if alias is not None else None


ALIAS_NAMES = ("production", "previous")


# -- monitoring records ------------------------------------------------------------------------
class ColumnDriftRecord(_Format):
    column: str
    kind: str
    stattest: str
    score: float
    threshold: float
    drifted: bool


class DriftRecord(_Format):
    columns: dict[str, ColumnDriftRecord]
    prediction: ColumnDriftRecord | None = None
    drifted_share: float
    dataset_drift: bool
    drift_share: float
    reference_rows: int
    current_rows: int
    drifted_columns: list[str] = []
    missing_columns: list[str] = []  # no value in the window: not tested (driftloop.drift)
    missing_shares: dict[str, float] = {}  # feature -> share of rows without a value


class WindowRecord(_Format):
    """``summary.json`` of one drift window: what the job saw and decided. The job reads
    earlier windows back through this model (hysteresis)."""

    window_id: str
    model: str
    endpoint: str
    version: int
    window: TimeWindow
    rows: int
    drifted_share: float
    drifted_columns: list[str]
    # Features with no value at all in the window (all null, as the server may accept):
    # a data-quality finding, reported here and left out of the drifted share.
    missing_columns: list[str] = []
    quality: dict[str, float] | None = None
    baseline: dict[str, float] = {}
    trigger: bool
    reasons: list[str]
    signals: list[str] = []  # the policy rules that fired, with their numbers
    recent_quality: dict[str, float] | None = None  # realised, over the quality look-back
    estimated: dict[str, float] | None = None  # label-free estimate on this window
    estimated_baseline: dict[str, float] | None = None  # its estimate on the reference
    weighted_share: float | None = None  # drifted share weighted by importance
    recent_drift_share: float | None = None  # vs the previous window (not the reference)
    trigger_id: str | None = None
    trigger_status: str | None = None
    trigger_outcome: str | None = None  # once its run settled: promoted / refused: ... / ...
    report_key: str
    drift: DriftRecord
    sample: dict[str, Any] | None = None
    evidently_decisions: dict[str, Any] | None = None


TriggerStatus = Literal["pending", "running", "succeeded", "failed"]


class TriggerRecord(_Format):
    """A retraining trigger: why, on what evidence, which run answers it."""

    id: str
    model: str
    version: int  # the production version whose traffic drifted
    reason: list[str]
    window: TimeWindow  # the drift window
    evidence: dict[str, str]  # store keys of the Evidently report and the window summary
    train_window: TimeWindow  # what the retraining run trains on
    status: TriggerStatus = "pending"
    run_id: str = ""
    run_name: str = ""
    backend: str = ""
    attempts: int = 0
    error: str = ""
    # Once settled: promoted vN, restored vN, registered vN (not promoted), refused (with
    # the gate's reasons) or failed; ``gate``: the store key of the run's GateRecord.
    outcome: str = ""
    gate: str = ""
    created: str = ""
    updated: str = ""


# -- payload logs and labels ----------------------------------------------------------------
# One log row per served instance: these columns, then one per input feature (numeric
# float64, categorical string; a feature whose name collides with one of these is stored
# as ``feature.<name>``), then OUTPUT_FIELDS. Types are Arrow type names.
LOG_FIELDS: dict[str, str] = {
    "request_id": "string",
    "row": "int64",  # index within the request
    # The request's ``timestamp``, else the CloudEvent's ``ce-time``, else receive time
    # (naive UTC); the date partition comes from it.
    "event_time": "timestamp",
    "received_at": "timestamp",
    "model": "string",
    "version": "int64",  # 0 when the response named none
    "endpoint": "string",  # default | canary | shadow
    "inference_service": "string",
    "namespace": "string",
}
OUTPUT_FIELDS: dict[str, str] = {
    "prediction": "float64",  # the regression value or P(positive)
    "label": "string",  # a classification label, else null
    "rules_fired": "string",  # a JSON list of rule names
}
# Delayed ground truth, joined to log rows by (request_id, row).
LABEL_FIELDS: dict[str, str] = {
    "request_id": "string",
    "row": "int64",
    "actual": "string",  # as sent
    "actual_value": "float64",  # when the label is a number
    "label_time": "timestamp",
    "received_at": "timestamp",
}
# A half of a logged inference that met no other half in a collector (KServe's logger
# posts them apart, a Service spreads them over replicas; or the TTL ran out), stored raw;
# ``read_logs`` pairs halves by request id and decodes them as the collector would have.
HALF_FIELDS: dict[str, str] = {
    "request_id": "string",
    "kind": "string",  # request | response
    "received_at": "timestamp",
    "event_time": "timestamp",  # a request's (its partition date); a response: null
    "ce_time": "string",
    "inference_service": "string",  # = the model: the collector admits no other service
    "namespace": "string",
    "endpoint": "string",
    "model": "string",  # a response: the model it names; a request: its service
    "version": "int64",  # a response: the version that answered; a request: 0
    "rows": "int64",  # a request: its instances
    "body": "binary",  # the JSON payload as received
}
# Where a logged prediction came from: KServe's two endpoints, and ``shadow`` for a shadow
# version scoring the same requests beside the served one (``serving.shadow``): its rows
# share the request ids of the served model's.
ENDPOINTS = ("default", "canary", "shadow")
SERVED_ENDPOINTS = ("default", "canary")  # what a predictor's --endpoint can say it serves
MAX_ID_LENGTH = 256  # a request id (ce-id, x-request-id): a UUID is 36
# How far past its receipt a label's ``time`` may be: clock skew, no more. A later time
# would let one label win the join (latest time) over every correction for that long.
MAX_LABEL_SKEW = timedelta(minutes=5)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def valid_name(name: object) -> bool:
    """Model, service and endpoint names become key segments: a safe alphabet only."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


class LabelRow(_Format):
    """One posted label (``POST /labels``); every value fits its LABEL_FIELDS column."""

    request_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    row: int = Field(0, ge=0, le=values.INT64_MAX)
    label: int | float | str
    time: datetime | None = None  # when the truth became known (naive UTC); default: receipt

    @field_validator("label", mode="before")
    @classmethod
    def _number_or_text(cls, v: object) -> object:
        if not isinstance(v, str):
            values.number(v)  # ValueError for bools, non-numbers and non-finite numbers
        return v  # 3 stays 3 (its text is "3", as a class label's would be)

    @field_validator("time", mode="before")
    @classmethod
    def _utc(cls, v: object) -> object:
        return None if v is None else values.timestamp(v)


def log_prefix(model: str, version: int | None = None, endpoint: str | None = None) -> str:
    prefix = f"logs/{model}"
    if version is not None:
        prefix += f"/v{version}"
        if endpoint is not None:
            prefix += f"/{endpoint}"
    return prefix


def log_key(model: str, version: int, endpoint: str, day: date) -> str:
    leaf = f"date={day.isoformat()}/{uuid.uuid4().hex}.parquet"
    return f"{log_prefix(model, version, endpoint)}/{leaf}"


def halves_prefix(service: str, kind: str | None = None) -> str:  # kind: request|response
    return f"logs/{service}/halves" + (f"/{kind}" if kind else "")


def half_key(service: str, kind: str, day: date) -> str:
    """``day``: a request's event date (windows select by it), a response's receive date."""
    return f"{halves_prefix(service, kind)}/date={day.isoformat()}/{uuid.uuid4().hex}.parquet"


def labels_prefix(model: str) -> str:
    return f"labels/{model}"


def label_key(model: str, day: date) -> str:
    return f"{labels_prefix(model)}/date={day.isoformat()}/{uuid.uuid4().hex}.parquet"


def dataset_key(sha256: str, name: str) -> str:
    """A data or rules file uploaded for the cluster, content-addressed: the same bytes are
    stored once, however many runs name them."""
    return f"datasets/{sha256}/{name}"


class Lease(_Format):
    trigger_id: str
    holder: str
    expires: str  # ISO time (UTC): a crashed holder's lease lapses then


class TrialRecord(_Format):
    """``trial.json`` beside a trained model between pipeline steps."""

    family: str = LEGACY_FAMILY
    params: dict[str, Any]
    epochs: int | None = None
    validation: dict[str, float]
    refit_rows: int | None = None  # set once the recipe was refit on the whole window
    # A warm-started trial: the production version it fine-tuned (its files are kept in
    # ``warm_start/`` beside the model, for the refit to start from the same weights).
    warm_start: int | None = None
    error: str = ""  # the trial failed to train: why (no model; the others compete)
