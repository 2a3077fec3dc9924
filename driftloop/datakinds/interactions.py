"""``interactions``: a recommender's data, one user-item interaction per row.

Sources (``source.format``):

    csv | parquet   a user's own file: user, item, time and optionally a rating or weight
                    column, named in the spec's ``interactions`` section and ``time.column``
    recbole         a dataset shipped inside the installed ``recbole`` wheel (``ml-100k``:
                    MovieLens-100K, GroupLens), read in place with ``importlib.resources``;
                    never copied into this repository or the store (data/README.md)

What leaves ``read``: the user and item ids as strings (an integer id ``42`` becomes
``"42"``: requests may send either), the rating (float64) when the spec names one,
``event_time``. Bad input is one DataError saying what to fix: no time column or rows with
no timestamp, ids that are neither strings nor integers (floats, booleans, missing ids),
duplicate (user, item, time) rows, fewer than two users or two items.

Baselines (the gate's references, same time split and protocol, ``driftloop.recsys_metrics``):
``popular``, the most-interacted items of the training split, and ``als``, implicit-feedback
alternating least squares (the ``implicit`` package) over the same interactions, falling
back to ``popular`` for users it has not seen.
"""

from __future__ import annotations

import importlib.resources
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from driftloop.datakinds import DataKind
from driftloop.errors import DataError

if TYPE_CHECKING:
    from driftloop.data import Splits
    from driftloop.spec import DatasetSpec
    from driftloop.validation import ValidationReport

# The reference ALS: 64 factors and 15 sweeps, implicit's documented defaults but for the
# width (as the torch model's); one BLAS thread (trials and baselines run side by side).
ALS_FACTORS, ALS_ITERATIONS, ALS_REGULARIZATION = 64, 15, 0.05


def recbole_file(name: str) -> str:
    """The path of a dataset's interactions inside the installed recbole package."""
    try:
        root = importlib.resources.files("recbole")
    except ModuleNotFoundError as e:
        raise DataError(
            "source.format recbole needs the recbole package (`make install` installs it "
            "from requirements-nodeps.lock, without its dependencies)"
        ) from e
    path = root / "dataset_example" / name / f"{name}.inter"
    if not path.is_file():
        raise DataError(f"the installed recbole has no dataset {name!r} ({path})")
    return str(path)


def _read_recbole(spec: DatasetSpec) -> pd.DataFrame:
    # Atomic files: tab-separated, a header of `name:type` fields (user_id:token, ...).
    raw = pd.read_csv(recbole_file(spec.source.path), sep="\t")
    raw.columns = [str(c).split(":")[0] for c in raw.columns]
    return raw


def _ids(values: pd.Series, column: str, what: str) -> pd.Series:
    """Ids as strings; only strings and integers are ids."""
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(
            f"{what} column {column!r}: row {row} has no {what} id; every row needs one"
        )
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_float_dtype(values):
        example = values.iloc[0]
        raise DataError(
            f"{what} column {column!r} holds {values.dtype} values (e.g. {example!r}): ids must "
            "be strings or integers; write them as such"
        )
    if pd.api.types.is_integer_dtype(values):
        return values.astype("int64").astype(str).astype(object)
    bad = values.map(lambda v: not (isinstance(v, str) or _is_int(v)))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        v = values.iloc[row]
        raise DataError(
            f"{what} column {column!r}: row {row} holds {type(v).__name__} {v!r}; ids must be "
            "strings or integers"
        )
    return values.map(lambda v: v if isinstance(v, str) else str(int(v))).astype(object)


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _times(raw: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
    column = spec.time.column
    assert column is not None  # the spec requires it
    if column not in raw.columns:
        raise DataError(
            f"interactions need a timestamp: time column {column!r} is not in "
            f"{spec.source_uri} (it has: {list(raw.columns)[:30]})"
        )
    values = raw[column]
    if values.isna().any():
        n, row = int(values.isna().sum()), int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(
            f"{n} interaction(s) have no timestamp in column {column!r} (e.g. row {row}): "
            "recommendations are trained and judged in time order; drop or fill them"
        )
    try:
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            ts = pd.to_datetime(values, unit=spec.interaction_options.time_unit)
        else:
            ts = pd.to_datetime(values, format=spec.time.format)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"time column {column!r} cannot be parsed as timestamps: {e}") from e
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts


class Interactions(DataKind):
    name = "interactions"
    floor = "popular"  # a recommender that cannot beat most-popular is broken

    # -- reading -----------------------------------------------------------------------
    def read(self, spec: DatasetSpec) -> pd.DataFrame:
        from driftloop.data import TIME, read_source

        opts = spec.interaction_options
        raw = _read_recbole(spec) if spec.source.format == "recbole" else read_source(spec)
        needed = [c for c in (opts.user, opts.item, opts.rating) if c]
        if missing := [c for c in needed if c not in raw.columns]:
            raise DataError(
                f"column(s) {missing} named in the spec are not in {spec.source_uri} "
                f"(it has: {list(raw.columns)[:30]})"
            )
        if raw.empty:
            raise DataError(f"dataset {spec.source_uri} holds no interactions")
        out = pd.DataFrame(
            {
                opts.user: _ids(raw[opts.user], opts.user, "user").to_numpy(),
                opts.item: _ids(raw[opts.item], opts.item, "item").to_numpy(),
            }
        )
        if opts.rating:
            rating = pd.to_numeric(raw[opts.rating], errors="coerce")
            if rating.isna().any():
                raise DataError(f"rating column {opts.rating!r} has missing or non-numeric values")
            out[opts.rating] = rating.astype("float64").to_numpy()
        out[TIME] = _times(raw, spec).to_numpy()
        dup = out.duplicated([opts.user, opts.item, TIME])
        if dup.any():
            first = out[dup].iloc[0]
            raise DataError(
                f"{int(dup.sum())} duplicate (user, item, time) row(s), e.g. user "
                f"{first[opts.user]!r}, item {first[opts.item]!r} at {first[TIME]}: the same "
                "interaction recorded twice is an export problem, not feedback; deduplicate it"
            )
        if opts.min_rating is not None:
            out = out[out[opts.rating] >= opts.min_rating].reset_index(drop=True)
        for column, what in ((opts.user, "user"), (opts.item, "item")):
            if out[column].nunique() < 2:
                raise DataError(
                    f"the interactions hold {out[column].nunique()} {what}(s): a recommender "
                    f"learns from many {what}s; this is not a recommendation dataset"
                )
        return out

    # -- validation --------------------------------------------------------------------
    def validate(self, df: pd.DataFrame, spec: DatasetSpec) -> ValidationReport:
        from driftloop.data import split_by_time
        from driftloop.validation import ValidationReport

        opts, q = spec.interaction_options, spec.quality
        report = ValidationReport(dataset=spec.name, rows=len(df))
        s = split_by_time(df, spec)
        for name, part in (("train", s.train), ("validation", s.validation), ("test", s.test)):
            report.add(
                "rows per split",
                name,
                len(part) >= q.min_rows_per_split,
                f"{len(part)} interactions in {name}",
                expected=f"at least {q.min_rows_per_split} (quality.min_rows_per_split)",
            )
        for column, what in ((opts.user, "users"), (opts.item, "items")):
            n = s.train[column].nunique()
            report.add(
                f"{what} in train",
                column,
                n >= 2,
                f"{n} {what} in the training split",
                expected=f"at least 2 {what}",
            )
        known = s.test[opts.user].isin(set(s.train[opts.user]))
        report.add(
            "test users seen in training",
            opts.user,
            bool(known.any()),
            f"{known.mean():.0%} of test interactions are by users the training split has "
            "(the others get the popularity fallback)",
            expected="some test users seen in training",
            warn=True,
        )
        return report

    # -- baselines ---------------------------------------------------------------------
    def baselines(self, splits: Splits, spec: DatasetSpec) -> dict[str, dict[str, float]]:
        from driftloop.recsys_metrics import evaluate

        train, test = splits.train, splits.test
        opts = spec.interaction_options
        users = pd.Index(pd.unique(train[opts.user]))
        items = pd.Index(pd.unique(train[opts.item]))
        u = users.get_indexer(train[opts.user])
        i = items.get_indexer(train[opts.item])
        import scipy.sparse as sp

        x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(users), len(items)))
        x.sum_duplicates()
        x.data[:] = 1.0
        popularity = np.asarray(x.sum(axis=0)).ravel()
        catalogue = np.asarray(items, dtype=object)

        def top(scores: np.ndarray, row: int | None) -> list[str]:
            s = scores.astype(np.float64, copy=True)
            if row is not None:
                s[x.indices[x.indptr[row] : x.indptr[row + 1]]] = -np.inf
            best = np.argsort(-s, kind="stable")[:10]
            return [str(catalogue[j]) for j in best if np.isfinite(s[j])]

        def popular(us: list[str]) -> list[list[str]]:
            rows = users.get_indexer(us)
            return [top(popularity, r if r >= 0 else None) for r in rows]

        factors = _als(x)

        def als(us: list[str]) -> list[list[str]]:
            uf, itf = factors
            rows = users.get_indexer(us)
            return [top(itf @ uf[r], r) if r >= 0 else top(popularity, None) for r in rows]

        return {
            "popular": evaluate(popular, test, spec, len(items)),
            "als": evaluate(als, test, spec, len(items)),
        }


def _als(x: object) -> tuple[np.ndarray, np.ndarray]:
    """(user factors, item factors) of implicit's ALS on the user x item matrix, seeded."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        model = AlternatingLeastSquares(
            factors=ALS_FACTORS,
            regularization=ALS_REGULARIZATION,
            iterations=ALS_ITERATIONS,
            random_state=0,
            num_threads=1,
        )
        model.fit(x, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


KIND = Interactions()
