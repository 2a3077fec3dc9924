"""Served-traffic logs and delayed ground truth in the store: writers and readers.

The collector (``python -m monitoring.collector``) writes these; the drift job reads them.
Layout, columns and the label format are defined in ``driftloop.formats`` (``LOG_FIELDS``,
``HALF_FIELDS``, ``LABEL_FIELDS``, ``LabelRow``, ``log_key``, ``half_key``, ``label_key``)::

    logs/<model>/v<version>/<endpoint>/date=YYYY-MM-DD/<uuid>.parquet   one row per instance
    logs/<model>/halves/<request|response>/date=.../<uuid>.parquet      unpaired halves
    labels/<model>/date=YYYY-MM-DD/<uuid>.parquet                      one row per label

``read_logs`` returns every logged instance exactly once: it pairs halves that the
collectors stored unpaired (KServe's logger posts the two halves separately and a Service
spreads them over replicas), decodes them with the collector's own ``decode_pair``, and
drops the copies that retries and write-ahead-log replays leave (same request id, row and
endpoint: the first received is kept; a shadow version's rows share the served model's
request ids under ``endpoint: shadow``).
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from driftloop import values
from driftloop.decode import (
    BATCH_CONTENT_TYPE,
    REQUEST,
    RESERVED,
    RESPONSE,
    Event,
    decode_pair,
    feature_column,
)
from driftloop.errors import DataError, IntegrityError, NotFound
from driftloop.formats import (
    HALF_FIELDS,
    LABEL_FIELDS,
    LOG_FIELDS,
    MAX_LABEL_SKEW,
    OUTPUT_FIELDS,
    InputSchema,
    LabelRow,
    VersionFiles,
    halves_prefix,
    label_key,
    labels_prefix,
    log_key,
    log_prefix,
    parse_schema,
    valid_name,
)
from driftloop.registry import Registry, VersionRef
from driftloop.store import Store

if TYPE_CHECKING:  # pandas is imported lazily: the collector never needs it
    import pandas as pd

    from driftloop.registry import VersionRef

__all__ = ["BATCH_CONTENT_TYPE", "REQUEST", "RESPONSE", "feature_column", "valid_name"]
log = logging.getLogger(__name__)
LOG_COLUMNS = tuple(LOG_FIELDS)
OUTPUT_COLUMNS = tuple(OUTPUT_FIELDS)
LABEL_COLUMNS = tuple(LABEL_FIELDS)
TS = pa.timestamp("us")  # naive UTC, microseconds: what pandas and Evidently expect
_ARROW = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "timestamp": TS,
    "binary": pa.binary(),
}
_DATE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


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
HALF_SCHEMA = pa.schema(_fields(HALF_FIELDS))


def rows_table(rows: list[dict], kinds: dict[str, str] | None) -> pa.Table:
    """Decoded rows (``decode_pair``) -> an Arrow log table; feature kinds from the
    schema, else inferred from the values (a version without a usable schema.json)."""
    known = {feature_column(n): k for n, k in (kinds or {}).items()}
    cols: dict[str, str] = {}
    for r in rows:
        for c in r:
            if c not in RESERVED and c not in cols:
                cols[c] = known.get(c, "")
    for c, k in cols.items():
        if k:
            continue
        vals = [r.get(c) for r in rows]
        numeric = all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals
        )
        cols[c] = "numeric" if numeric else "categorical"
        for r in rows:
            v = r.get(c)
            if v is not None:
                r[c] = float(v) if numeric else str(v)
    return pa.Table.from_pylist(rows, schema=log_schema(cols))


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
    ValueError for text that is not ISO-8601 or not within years 1..9999 in UTC."""
    if t is None:
        return None
    return values.timestamp(t if isinstance(t, datetime) else str(t))


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
    """Logged instances of ``model`` with ``start <= event_time < end`` (naive UTC), each
    ``(request_id, row, endpoint)`` once: rows the collectors wrote, plus rows paired now from the
    halves they stored unpaired (``read_halves``); of copies, the first received is kept.

    A file that is not valid Parquet raises DataError naming it (never a silent skip: a
    drift window missing data would look like no drift).
    """
    lo, hi = naive_utc(start), naive_utc(end)
    prefix = log_prefix(model, version, endpoint if version is not None else None)
    fixed = version is not None and endpoint is not None
    keys = _keys_in_window(store, prefix, lo, hi, fixed)
    if version is None:  # the model's whole tree: its halves are read below, not here
        keys = [k for k in keys if k.split("/")[2] != "halves"]
    if endpoint is not None and version is None:
        keys = [k for k in keys if k.split("/")[3] == endpoint]
    df = _read_frames(store, keys, LOG_COLUMNS + OUTPUT_COLUMNS)
    paired = read_halves(store, model, lo, hi)
    if len(paired):
        import pandas as pd

        if version is not None:
            paired = paired[paired["version"] == version]
        if endpoint is not None:
            paired = paired[paired["endpoint"] == endpoint]
        df = pd.concat([df, paired], ignore_index=True, sort=False) if len(df) else paired
    if lo is not None:
        df = df[df["event_time"] >= lo]
    if hi is not None:
        df = df[df["event_time"] < hi]
    if len(df):
        df = _first_copies(df)
    return df.sort_values(["event_time", "request_id", "row"], kind="stable").reset_index(drop=True)


def _first_copies(df: pd.DataFrame) -> pd.DataFrame:
    """Each (request_id, row, endpoint) once, the first received: retries and
    write-ahead-log replays log an instance more than once (a shadow's row of the same
    request is not a copy). The key columns are ordered, not the frame."""
    import numpy as np

    order = np.argsort(df["received_at"].to_numpy(), kind="stable")
    copies = df[["request_id", "row", "endpoint"]].iloc[order].duplicated().to_numpy()
    if not copies.any():
        return df
    keep = np.ones(len(df), dtype=bool)
    keep[order[copies]] = False
    return df[keep]


def _half_rows(store: Store, keys: list[str]) -> dict[tuple[str, str], dict]:
    """Half-records by (request id, endpoint); of copies (retries, replays), the first
    received."""
    out: dict[tuple[str, str], dict] = {}
    for k in keys:
        for h in _read_table(store, k).to_pylist():
            key = (h["request_id"], h["endpoint"] or "default")
            seen = out.get(key)
            if seen is None or h["received_at"] < seen["received_at"]:
                out[key] = h
    return out


def _event(h: dict) -> Event:
    return Event(
        is_request=h["kind"] == "request",
        raw=h["body"],
        received=h["received_at"].replace(tzinfo=UTC).timestamp(),
        ce_time=h["ce_time"],
        service=h["inference_service"],
        namespace=h["namespace"],
        endpoint=h["endpoint"],
        rows=h["rows"] or 0,
        model=h["model"],
        version=h["version"] or 0,
    )


def read_halves(
    store: Store, service: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Log rows paired from the halves stored under ``logs/<service>/halves/``: requests
    whose event date can fall in ``[start, end)``, with the responses received within a
    day of them, decoded by ``decode_pair`` against the answering version's schema. A
    half whose other half is not (yet) stored is not a row; a pair that does not decode
    is logged and skipped, as the collector would have."""
    import pandas as pd

    keys = _keys_in_window(store, halves_prefix(service, "request"), start, end, True)
    requests = _half_rows(store, keys)
    if not requests:
        return pd.DataFrame(columns=list(LOG_COLUMNS + OUTPUT_COLUMNS))
    days = {h["received_at"].date() + timedelta(d) for h in requests.values() for d in (-1, 0, 1)}
    prefix = halves_prefix(service, "response")
    keys = [k for d in sorted(days) for k in store.list(f"{prefix}/date={d.isoformat()}")]
    responses = _half_rows(store, [k for k in keys if k.endswith(".parquet")])
    kinds: dict[tuple[str, int], dict[str, str] | None] = {}
    groups: dict[tuple[str, int], list[dict]] = {}
    for (rid, endpoint), h in requests.items():
        r = responses.get((rid, endpoint))
        if r is None:
            continue
        req, resp = _event(h), _event(r)
        at = (resp.model, resp.version)
        if at not in kinds:
            kinds[at] = _schema_kinds(store, *at)
        try:
            _, rows = decode_pair(rid, req, resp, kinds[at])
        except (DataError, ValueError) as e:
            log.warning("halves of request %s do not decode: %s", rid, e)
            continue
        groups.setdefault(at, []).extend(rows)
    frames = [rows_table(rows, kinds[at]).to_pandas() for at, rows in groups.items()]
    if not frames:
        return pd.DataFrame(columns=list(LOG_COLUMNS + OUTPUT_COLUMNS))
    return pd.concat(frames, ignore_index=True, sort=False)


def _schema_kinds(store: Store, model: str, version: int) -> dict[str, str] | None:
    ref = VersionRef(model, version)
    try:
        data = Registry(store).read_file(ref, VersionFiles.SCHEMA)
        kinds: dict[str, str] = parse_schema(data, f"{ref}/{VersionFiles.SCHEMA}").kinds
        return kinds
    except (NotFound, IntegrityError):
        return None


# -- labels -------------------------------------------------------------------------------
def write_labels(
    store: Store,
    model: str,
    labels: list[dict],
    now: datetime | None = None,
    max_skew: timedelta = MAX_LABEL_SKEW,
) -> list[str]:
    """Store ground truth ``[{"request_id", "row"=0, "label", "time"=None}, ...]``.

    ``time`` (when the truth became known; default: receipt) may be at most ``max_skew``
    after the receipt ``now``: see ``join_labels`` for why. One Parquet file per label
    date; returns the keys written. Raises DataError on a bad entry (nothing written).
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
        when = row.time or received
        if when > received + max_skew:
            raise DataError(
                f"labels[{i}].time: {when.isoformat()} is more than {max_skew} after its "
                f"receipt ({received.isoformat(timespec='seconds')} UTC); a label cannot "
                "be dated in the future"
            )
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
    the latest ``label_time`` wins (a correction replaces the first answer), and of two
    with the same time the one received last. ``write_labels`` refuses times more than
    ``MAX_LABEL_SKEW`` after their receipt, so no label can claim to be newer than what
    is posted after it: a label can be replaced by any label posted more than the skew
    later, and can itself replace only labels dated before its own time. The drift job
    joins the labels dated from the window's start on (``read_labels(start=...)``): a
    label dated before a window does not label that window's rows.
    """
    cols = ["request_id", "row", "actual", "actual_value", "label_time"]
    order = ["label_time", "received_at"] if "received_at" in labels else ["label_time"]
    latest = labels.sort_values(order, kind="stable")[cols].drop_duplicates(
        ["request_id", "row"], keep="last"
    )
    latest = latest.astype({"row": "int64"})
    out = logs.astype({"row": "int64"}).merge(latest, on=["request_id", "row"], how="left")
    return out


def read_window(
    store: Store,
    ref: VersionRef,
    schema: InputSchema,
    endpoint: str,
    start: datetime,
    end: datetime,
) -> pd.DataFrame:
    """The logged rows of one version and endpoint in ``[start, end)`` (the schema's log
    columns under their own names, ``prediction``), with the target column filled from
    delayed labels where they have arrived."""
    logs = read_logs(store, ref.model, ref.version, endpoint, start, end)
    if logs.empty:
        raise DataError(
            f"empty window: no logged requests for {ref} ({endpoint}) in [{start}, {end})"
        )
    logs = logs.rename(columns={feature_column(n): n for n in schema.names})
    missing = [n for n in schema.names if n not in logs.columns]
    if missing:
        raise DataError(
            f"the logs of {ref} lack feature column(s) {missing}: "
            "they do not match the version's schema"
        )
    labels = read_labels(store, ref.model, start=start)
    target = schema.target
    if labels.empty:
        logs[target] = None
        return logs
    joined = join_labels(logs, labels)
    joined[target] = joined["actual_value"] if schema.task == "regression" else joined["actual"]
    return joined.drop(columns=["actual", "actual_value", "label_time"])
