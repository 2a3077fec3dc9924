"""Served-traffic logs and delayed ground truth in the store: writers and readers.

The collector (``python -m monitoring.collector``) writes these; the drift job reads them.
Layout, columns and the label format are defined in ``driftloop.formats`` (``LOG_FIELDS``,
``OUTPUT_FIELDS``, ``LABEL_FIELDS``, ``LabelRow``, ``log_key``, ``label_key``)::

    logs/<model>/v<version>/<endpoint>/date=YYYY-MM-DD/<uuid>.parquet   one row per instance
    labels/<model>/date=YYYY-MM-DD/<uuid>.parquet                      one row per label
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
from pydantic import ValidationError

from driftloop.errors import DataError, NotFound
from driftloop.formats import (
    LABEL_FIELDS,
    LOG_FIELDS,
    OUTPUT_FIELDS,
    InputSchema,
    LabelRow,
    label_key,
    labels_prefix,
    log_key,
    log_prefix,
)
from driftloop.store import Store

if TYPE_CHECKING:  # pandas is imported lazily: the collector never needs it
    import pandas as pd

LOG_COLUMNS = tuple(LOG_FIELDS)
OUTPUT_COLUMNS = tuple(OUTPUT_FIELDS)
LABEL_COLUMNS = tuple(LABEL_FIELDS)
RESERVED = frozenset(LOG_COLUMNS + OUTPUT_COLUMNS)
# KServe's payload-logger CloudEvent types; the predictor's own emitter sends the same,
# batched in CloudEvents' batched content mode.
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
TS = pa.timestamp("us")  # naive UTC, microseconds: what pandas and Evidently expect
_ARROW = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "timestamp": TS}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DATE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


def valid_name(name: object) -> bool:
    """Model and endpoint names become key segments: keep them to a safe alphabet."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def feature_column(name: str) -> str:
    return f"feature.{name}" if name in RESERVED else name


def _fields(spec: dict[str, str]) -> list[pa.Field]:
    return [pa.field(n, _ARROW[t]) for n, t in spec.items()]


def log_schema(features: dict[str, str]) -> pa.Schema:
    """The Arrow schema of a log batch; ``features`` maps column -> numeric|categorical.

    Feature columns are already mapped through ``feature_column``.
    """
    feats = [
        pa.field(n, pa.float64() if k == "numeric" else pa.string()) for n, k in features.items()
    ]
    return pa.schema(_fields(LOG_FIELDS) + feats + _fields(OUTPUT_FIELDS))


LABEL_SCHEMA = pa.schema(_fields(LABEL_FIELDS))


def write_log_frame(
    store: Store,
    model: str,
    version: int,
    endpoint: str,
    schema: InputSchema,
    frame: pd.DataFrame,
) -> list[str]:
    """Import already-served traffic as logs, exactly as the collector would have written
    them: backfills, offline replays (``driftloop backtest``), benchmarks. ``frame``: the
    schema's log columns (``schema.names``: a tabular model's features; what an image
    model's family logs, ``FittedModel.log_inputs``), ``event_time``, ``prediction`` and
    optionally ``request_id`` and ``label``. Public API."""
    import pandas as pd

    if frame.empty:
        return []
    kinds: dict[str, str] = {feature_column(n): k for n, k in schema.kinds.items()}
    df = frame.rename(columns={n: feature_column(n) for n in schema.names})
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
        try:
            row = LabelRow.model_validate(item)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(entry)"
            raise DataError(f"labels[{i}].{where}: {first['msg']}") from e
        when = naive_utc(row.time) or received
        numeric = not isinstance(row.label, str)
        by_day.setdefault(when.date(), []).append(
            {
                "request_id": row.request_id,
                "row": row.row,
                "actual": str(row.label),
                "actual_value": float(row.label) if numeric else None,
                "label_time": when,
                "received_at": received,
            }
        )
    schema = LABEL_SCHEMA
    keys = []
    for day, rows in sorted(by_day.items()):
        key = label_key(model, day)
        store.put(key, to_parquet(pa.Table.from_pylist(rows, schema=schema)))
        keys.append(key)
    return keys


def read_labels(store: Store, model: str, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Labels of ``model`` with ``start <= label_time < end``."""
    lo, hi = naive_utc(start), naive_utc(end)
    keys = _keys_in_window(store, labels_prefix(model), lo, hi, fixed_leaf=True)
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
