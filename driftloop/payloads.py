"""Served-traffic logs and delayed ground truth in the store: layout, columns, readers.

The collector (``python -m monitoring.collector``) writes these; the drift job reads them.

Layout::

    logs/<model>/v<version>/<endpoint>/date=YYYY-MM-DD/<uuid>.parquet   one row per instance
    labels/<model>/date=YYYY-MM-DD/<uuid>.parquet                      one row per label

Log columns (``LOG_COLUMNS``, then one column per input feature, then ``OUTPUT_COLUMNS``):
``request_id`` (str), ``row`` (int64, index within the request), ``event_time`` (naive UTC:
the request's ``timestamp``, else the CloudEvent's ``ce-time``, else receive time; the date
partition comes from it), ``received_at``, ``model``, ``version`` (int64; 0 when the
response named none), ``endpoint`` (``default``/``canary``), ``inference_service``,
``namespace``; features (numeric → float64, categorical → string); ``prediction``
(float64: the regression value or P(positive)), ``label`` (str or null: a classification
label), ``rules_fired`` (str: a JSON list). A feature whose name collides with one of
these columns is stored as ``feature.<name>``.

Label columns: ``request_id``, ``row``, ``actual`` (str, as sent), ``actual_value``
(float64 when the label is a number), ``label_time``, ``received_at``.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from driftloop.errors import DataError, NotFound
from driftloop.store import Store

if TYPE_CHECKING:  # pandas is imported lazily: the collector never needs it
    import pandas as pd

LOG_COLUMNS = (
    "request_id",
    "row",
    "event_time",
    "received_at",
    "model",
    "version",
    "endpoint",
    "inference_service",
    "namespace",
)
OUTPUT_COLUMNS = ("prediction", "label", "rules_fired")
LABEL_COLUMNS = ("request_id", "row", "actual", "actual_value", "label_time", "received_at")
RESERVED = frozenset(LOG_COLUMNS + OUTPUT_COLUMNS)
ENDPOINTS = ("default", "canary")
# KServe's payload-logger CloudEvent types; the predictor's own emitter sends the same,
# batched in CloudEvents' batched content mode.
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
TS = pa.timestamp("us")  # naive UTC, microseconds: what pandas and Evidently expect
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DATE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


def valid_name(name: object) -> bool:
    """Model and endpoint names become key segments: keep them to a safe alphabet."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


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


def label_key(model: str, day: date) -> str:
    return f"labels/{model}/date={day.isoformat()}/{uuid.uuid4().hex}.parquet"


def feature_column(name: str) -> str:
    return f"feature.{name}" if name in RESERVED else name


def log_schema(features: dict[str, str]) -> pa.Schema:
    """The Arrow schema of a log batch; ``features`` maps column → numeric|categorical.

    Feature columns are already mapped through ``feature_column``.
    """
    fields = [
        pa.field("request_id", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("event_time", TS),
        pa.field("received_at", TS),
        pa.field("model", pa.string()),
        pa.field("version", pa.int64()),
        pa.field("endpoint", pa.string()),
        pa.field("inference_service", pa.string()),
        pa.field("namespace", pa.string()),
    ]
    fields += [
        pa.field(n, pa.float64() if k == "numeric" else pa.string()) for n, k in features.items()
    ]
    fields += [
        pa.field("prediction", pa.float64()),
        pa.field("label", pa.string()),
        pa.field("rules_fired", pa.string()),
    ]
    return pa.schema(fields)


def write_log_frame(
    store: Store, model: str, version: int, endpoint: str, schema: dict, frame: pd.DataFrame
) -> list[str]:
    """Import already-served traffic as logs, exactly as the collector would have written
    them (backfills, offline replays, benchmarks). ``frame``: the schema's features,
    ``event_time``, ``prediction`` and optionally ``request_id``/``label``."""
    import pandas as pd

    if frame.empty:
        return []
    kinds = {feature_column(f["name"]): f["kind"] for f in schema["features"]}
    df = frame.rename(columns={f["name"]: feature_column(f["name"]) for f in schema["features"]})
    n = len(df)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    base = {
        "request_id": [uuid.uuid4().hex for _ in range(n)],
        "row": 0,
        "received_at": now,
        "model": model,
        "version": version,
        "endpoint": endpoint,
        "inference_service": model,
        "namespace": "",
        "label": None,
        "rules_fired": "[]",
    }
    for col, value in base.items():
        if col not in df.columns:
            df[col] = value
    for c, k in kinds.items():
        if k == "categorical":
            df[c] = df[c].astype("string").astype(object)
    df["event_time"] = pd.to_datetime(df["event_time"])
    keys = []
    table_schema = log_schema(kinds)
    for day, part in df.groupby(df["event_time"].dt.date, sort=True):
        table = pa.Table.from_pandas(
            part[table_schema.names], schema=table_schema, preserve_index=False
        )
        key = log_key(model, version, endpoint, day)
        store.put(key, to_parquet(table))
        keys.append(key)
    return keys


def to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


# -- reading ------------------------------------------------------------------------------
def naive_utc(t: Any) -> datetime | None:
    """A datetime or ISO-8601 text -> naive UTC (the logs' time zone); None stays None.
    ValueError for text that is not ISO-8601."""
    if t is None:
        return None
    ts = t if isinstance(t, datetime) else datetime.fromisoformat(str(t))
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _keys_in_window(
    store: Store, prefix: str, start: datetime | None, end: datetime | None, fixed_leaf: bool
) -> list[str]:
    """Parquet keys under ``prefix`` whose date partition can overlap ``[start, end)``."""
    first = start.date() if start else None
    last = (end - timedelta(microseconds=1)).date() if end else None
    if fixed_leaf and first and last and (last - first).days <= 400:
        # Model, version and endpoint known: list only the days in the window.
        days = [first + timedelta(d) for d in range((last - first).days + 1)]
        keys = [k for d in days for k in store.list(f"{prefix}/date={d.isoformat()}")]
    else:
        keys = store.list(prefix)
    out = []
    for k in keys:
        m = _DATE.search(k)
        if not k.endswith(".parquet") or not m:
            continue
        day = date.fromisoformat(m.group(1))
        if (first is None or day >= first) and (last is None or day <= last):
            out.append(k)
    return out


def _read_table(store: Store, key: str) -> pa.Table:
    try:
        path = store.local_path(key)
        source = str(path) if path is not None else io.BytesIO(store.get(key))
        return pq.read_table(source)
    except NotFound:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(
            f"{store.uri}/{key} is not a readable Parquet file ({e}); "
            "move or delete it and read again"
        ) from e


def _read_frames(store: Store, keys: Iterable[str], columns: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    frames = [_read_table(store, k).to_pandas() for k in keys]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True, sort=False)


def read_logs(
    store: Store,
    model: str,
    version: int | None = None,
    endpoint: str | None = None,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """Logged instances of ``model`` with ``start <= event_time < end`` (naive UTC).

    A file that is not valid Parquet raises DataError naming it (never a silent skip: a
    drift window missing data would look like no drift).
    """
    lo, hi = naive_utc(start), naive_utc(end)
    prefix = log_prefix(model, version, endpoint if version is not None else None)
    fixed = version is not None and endpoint is not None
    keys = _keys_in_window(store, prefix, lo, hi, fixed)
    if endpoint is not None and version is None:
        keys = [k for k in keys if k.split("/")[3] == endpoint]
    df = _read_frames(store, keys, LOG_COLUMNS + OUTPUT_COLUMNS)
    if lo is not None:
        df = df[df["event_time"] >= lo]
    if hi is not None:
        df = df[df["event_time"] < hi]
    return df.sort_values(["event_time", "request_id", "row"], kind="stable").reset_index(drop=True)


# -- labels -------------------------------------------------------------------------------
def write_labels(
    store: Store, model: str, labels: list[dict], now: datetime | None = None
) -> list[str]:
    """Store ground truth ``[{"request_id", "row"=0, "label", "time"=None}, ...]``.

    One Parquet file per label date; returns the keys written. Raises DataError on a bad
    entry (nothing written).
    """
    if not valid_name(model):
        raise DataError(f"model name {model!r} is not a valid name ([A-Za-z0-9_.-])")
    received = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    by_day: dict[date, list[dict]] = {}
    for i, item in enumerate(labels):
        if not isinstance(item, dict):
            raise DataError(f"labels[{i}] must be an object")
        rid, row, value = item.get("request_id"), item.get("row", 0), item.get("label")
        if not isinstance(rid, str) or not rid:
            raise DataError(f"labels[{i}].request_id must be a non-empty string")
        if isinstance(row, bool) or not isinstance(row, int) or row < 0:
            raise DataError(f"labels[{i}].row must be a non-negative integer")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise DataError(f"labels[{i}].label must be a number or a string")
        try:
            when = naive_utc(item.get("time")) or received
        except (TypeError, ValueError) as e:
            raise DataError(f"labels[{i}].time is not an ISO-8601 time: {e}") from e
        numeric = not isinstance(value, str)
        by_day.setdefault(when.date(), []).append(
            {
                "request_id": rid,
                "row": row,
                "actual": str(value),
                "actual_value": float(value) if numeric else None,
                "label_time": when,
                "received_at": received,
            }
        )
    schema = pa.schema(
        [
            ("request_id", pa.string()),
            ("row", pa.int64()),
            ("actual", pa.string()),
            ("actual_value", pa.float64()),
            ("label_time", TS),
            ("received_at", TS),
        ]
    )
    keys = []
    for day, rows in sorted(by_day.items()):
        key = label_key(model, day)
        store.put(key, to_parquet(pa.Table.from_pylist(rows, schema=schema)))
        keys.append(key)
    return keys


def read_labels(store: Store, model: str, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Labels of ``model`` with ``start <= label_time < end``."""
    lo, hi = naive_utc(start), naive_utc(end)
    keys = _keys_in_window(store, f"labels/{model}", lo, hi, fixed_leaf=True)
    df = _read_frames(store, keys, LABEL_COLUMNS)
    if lo is not None:
        df = df[df["label_time"] >= lo]
    if hi is not None:
        df = df[df["label_time"] < hi]
    return df.reset_index(drop=True)


def join_labels(logs: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``logs`` with ``actual``, ``actual_value`` and ``label_time`` joined on (request_id, row).

    A left join: unlabelled rows keep nulls. When a row was labelled twice, the label with
    the latest ``label_time`` wins (a correction replaces the first answer).
    """
    cols = ["request_id", "row", "actual", "actual_value", "label_time"]
    latest = (
        labels[cols]
        .sort_values("label_time", kind="stable")
        .drop_duplicates(["request_id", "row"], keep="last")
    )
    latest = latest.astype({"row": "int64"})
    out = logs.astype({"row": "int64"}).merge(latest, on=["request_id", "row"], how="left")
    return out
