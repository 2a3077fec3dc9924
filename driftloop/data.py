"""Load a dataset by its spec, cut a time window ``[start, end)``, split it by time.

Every frame that leaves this module has the spec's inputs (tabular: its features; other
kinds: their columns, ``driftloop.datakinds``), the target and one ``event_time`` column
(UTC-naive timestamps), sorted by time. Splits are by time,
never shuffled across it: train < validation < test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.errors import DataError
from driftloop.spec import DatasetSpec

TIME = "event_time"


def read_uri(uri: str, what: str = "file") -> bytes:
    """The bytes of a local path, ``file://`` path or ``s3://bucket/key`` (credentials and
    endpoint from this process's settings)."""
    if uri.startswith("s3://"):
        from driftloop.errors import NotFound
        from driftloop.settings import load_settings
        from driftloop.store import open_store

        bucket_uri, _, key = uri.rpartition("/")
        try:
            return open_store(load_settings(), bucket_uri).get(key)
        except NotFound as e:
            raise DataError(f"{what} {uri} does not exist") from e
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise DataError(f"{what} {uri} does not exist")
    return path.read_bytes()


def read_source(spec: DatasetSpec, columns: list[str] | None = None) -> pd.DataFrame:
    """The raw file as the spec describes it (CSV or Parquet, local or s3://). With
    ``columns``, only those are parsed when the file has them all (its header is read
    first); otherwise every column, so that the error can name what the file has."""
    uri = spec.source_uri
    fmt = spec.source.format or ("parquet" if uri.endswith((".parquet", ".pq")) else "csv")
    try:
        import io

        if uri.startswith("s3://"):
            fh: object = io.BytesIO(read_uri(uri, "dataset file"))
        else:  # read in place: no copy of a large file in memory
            fh = Path(uri.removeprefix("file://"))
            if not fh.is_file():
                raise DataError(f"dataset file {uri} does not exist")
        if fmt == "parquet":
            if columns is not None:
                import pyarrow.parquet as pq

                have = pq.read_schema(fh).names
                if isinstance(fh, io.BytesIO):
                    fh.seek(0)
                if set(columns) <= set(have):
                    return pd.read_parquet(fh, columns=[c for c in have if c in columns])
            return pd.read_parquet(fh)
        header = None if spec.source.names else "infer"
        opts = {"sep": spec.source.sep, "names": spec.source.names, "header": header}
        if columns is not None:
            have = list(spec.source.names or pd.read_csv(fh, nrows=0, **opts).columns)
            if isinstance(fh, io.BytesIO):
                fh.seek(0)
            if set(columns) <= set(have):
                opts["usecols"] = [c for c in have if c in columns]
        return pd.read_csv(fh, **opts)
    except DataError:
        raise
    except Exception as e:  # parser errors, corrupt Parquet, unreachable store
        raise DataError(f"cannot read dataset {uri} as {fmt}: {e}") from e


def event_time(raw: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
    t = spec.time
    if t.row_order is not None:
        start = pd.Timestamp(t.row_order.start)
        step = pd.to_timedelta(t.row_order.step)
        return pd.Series(start + step * np.arange(len(raw)), index=raw.index)
    assert t.column is not None
    ts = _parse_times(raw[t.column], t.format)
    if t.hour_column:
        hours = _unparsed(raw[t.hour_column], pd.to_numeric(raw[t.hour_column], errors="coerce"))
        if hours:
            n, first = hours
            raise DataError(
                f"column {t.hour_column!r}: {n} of {len(raw)} values are not numbers of hours "
                f"(time.hour_column) (first: {first!r})"
            )
        ts = ts + pd.to_timedelta(pd.to_numeric(raw[t.hour_column]), unit="h")
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    if missing := int(ts.isna().sum()):
        # A row without a time belongs to no window: a windowed read would drop it unseen.
        first = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise DataError(
            f"column {t.column!r}: {missing} of {len(raw)} rows have no time (first: row "
            f"{first}); every row needs one: fill or drop them before training"
        )
    return ts


def _parse_times(raw: pd.Series, fmt: str | None) -> pd.Series:
    """``raw`` as timestamps; one line naming the column, how many values fail, the format
    and the first failure otherwise (never pandas' multi-line hints)."""
    import warnings

    with warnings.catch_warnings():  # "could not infer format": the count below says more
        warnings.simplefilter("ignore", UserWarning)
        try:
            ts = pd.to_datetime(raw, format=fmt, errors="coerce")
        except (ValueError, TypeError, OverflowError):  # e.g. timezones mixed in one column
            ts = pd.Series(pd.NaT, index=raw.index)
    if bad := _unparsed(raw, ts):
        n, first = bad
        how = f"in format {fmt!r}" if fmt else "in a format pandas infers (set time.format)"
        raise DataError(
            f"column {raw.name!r}: {n} of {len(raw)} values are not times {how} (first: {first!r})"
        )
    return ts


def _unparsed(raw: pd.Series, parsed: pd.Series) -> tuple[int, object] | None:
    """(how many, the first) of the values given that did not parse; None when all did."""
    bad = parsed.isna() & raw.notna()
    if not bad.any():
        return None
    return int(bad.sum()), raw[bad].iloc[0]


def needed_columns(spec: DatasetSpec) -> list[str]:
    """The source columns a tabular spec reads: features, target, time."""
    time_cols = [c for c in (spec.time.column, spec.time.hour_column) if c]
    return [*spec.features, spec.target, *time_cols]


def typed(raw: pd.DataFrame, spec: DatasetSpec, *, with_target: bool = True) -> pd.DataFrame:
    """Only the spec's columns, with the spec's types: numeric -> float64, categorical -> str."""
    needed = spec.features + ([spec.target] if with_target else [])
    time_cols = [c for c in (spec.time.column, spec.time.hour_column) if c]
    missing = [c for c in needed + time_cols if c not in raw.columns]
    if missing:
        raise DataError(
            f"column(s) {missing} named in the spec are not in the data "
            f"(it has: {list(raw.columns)[:30]})"
        )
    out = pd.DataFrame(index=raw.index)
    for c in spec.numeric:
        col = pd.to_numeric(raw[c], errors="coerce")
        bad = col.isna() & raw[c].notna()
        if bad.any():
            example = raw[c][bad].iloc[0]
            raise DataError(f"numeric column {c!r} has non-numeric values, e.g. {example!r}")
        out[c] = col.astype("float64")
    for c in spec.categorical:
        out[c] = raw[c].astype("string").astype(object).where(raw[c].notna(), None)
    if with_target:
        y = raw[spec.target]
        if spec.task == "regression":
            y = pd.to_numeric(y, errors="coerce")
            if (y.isna() & raw[spec.target].notna()).any():
                raise DataError(f"target {spec.target!r} has non-numeric values")
            out[spec.target] = y.astype("float64")
        else:
            out[spec.target] = y.astype("string").astype(object)
    out[TIME] = event_time(raw, spec)
    return out


def parse_bound(text: str, what: str) -> pd.Timestamp:
    """A window bound: ISO 8601 (a date or a date and time), naive UTC; one DataError
    naming ``what`` otherwise."""
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"{what} {text!r} is not an ISO 8601 time (e.g. 2012-01-01): {e}") from e
    if pd.isna(ts):
        raise DataError(f"{what} {text!r} is not an ISO 8601 time (e.g. 2012-01-01)")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts


def check_window(start: str | None, end: str | None) -> tuple[pd.Timestamp | None, ...]:
    """Both bounds parsed (either may be open), start before end."""
    lo = parse_bound(start, "start") if start else None
    hi = parse_bound(end, "end") if end else None
    if lo is not None and hi is not None and lo >= hi:
        raise DataError(f"empty window: start {start} is not before end {end}")
    return lo, hi


def load_window(spec: DatasetSpec, start: str | None, end: str | None) -> pd.DataFrame:
    """Rows with ``start <= event_time < end`` (either bound may be open), sorted by time."""
    from driftloop.datakinds import get_kind

    lo, hi = check_window(start, end)
    df = get_kind(spec.kind).read(spec)
    mask = pd.Series(True, index=df.index)
    if lo is not None:
        mask &= df[TIME] >= lo
    if hi is not None:
        mask &= df[TIME] < hi
    out = df[mask].sort_values(TIME, kind="stable").reset_index(drop=True)
    if out.empty:
        span = f"{df[TIME].min()} .. {df[TIME].max()}" if len(df) else "no rows"
        raise DataError(f"the window [{start}, {end}) holds no rows (the data spans {span})")
    return out


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def split_by_time(df: pd.DataFrame, spec: DatasetSpec) -> Splits:
    """Contiguous slices in time order: the latest ``test`` share, before it ``validation``."""
    df = df.sort_values(TIME, kind="stable").reset_index(drop=True)
    n = len(df)
    n_test = int(round(n * spec.split.test))
    n_val = int(round(n * spec.split.validation))
    n_train = n - n_val - n_test
    return Splits(
        train=df.iloc[:n_train].reset_index(drop=True),
        validation=df.iloc[n_train : n_train + n_val].reset_index(drop=True),
        test=df.iloc[n_train + n_val :].reset_index(drop=True),
    )


def frame_hash(df: pd.DataFrame) -> str:
    """A content hash of a frame, for lineage (same rows and values -> same hash)."""
    h = hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    h.update(",".join(df.columns).encode())
    return h.hexdigest()
