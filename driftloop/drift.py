"""Drift of a current window against a model version's reference, decided as Evidently does.

The drift job calls::

    stats = reference_statistics(sample_df, schema)     # once, at registration -> stats.json
    result = column_drift(stats, "window.parquet", schema)   # every window: fast, < 1 GB
    evidently_report(sample_df, window_df, schema, "report.html")   # the human-readable view

``column_drift`` reproduces Evidently 0.7.23's ``DataDriftPreset`` decisions (its defaults:
no method or threshold overrides, ``drift_share=0.5``) without running Evidently. What it
mirrors, read from ``evidently/legacy/calculations/stattests/registry.py``
(``_get_default_stattest``), ``.../data_drift.py`` (``get_one_column_drift``) and the
stat-test modules:

1. Per column, NaN and +-inf are dropped from both sides first. Evidently errors on an
   empty side; here a column with no value left in the window (all null: the server
   accepts nulls) is not tested but listed in ``missing_columns``, outside the drifted
   share, and each column's missing share in the window is kept (``missing_shares``).
2. Column types come from the DataDefinition, which ``evidently_report`` builds from the
   model's schema (numeric -> numerical, categorical -> categorical; ``prediction`` is
   numerical). Evidently's own inference (ints with <= 10 values -> categorical) never runs.
3. Reference with > 1,000 rows (after step 1): numerical -> Wasserstein distance normed by
   the reference's population std (floored at 0.001), unless reference + current together
   hold <= 5 distinct values, then Jensen-Shannon; categorical -> Jensen-Shannon on the
   category shares (natural log, keys = union of both sides). Threshold 0.1, drift when
   score >= 0.1.
4. Reference with <= 1,000 rows: K-S (numerical, > 5 distinct values), chi-square (> 2),
   Z-test (<= 2); drift when the p-value is below 0.05 (K-S: <= 0.05). This regime calls
   Evidently's own stat-test functions (exact by construction; slower; rare in practice,
   since registration keeps up to 20,000 reference rows).
5. Dataset drift when the share of drifted feature columns is >= drift_share (0.5).

What is precomputed (``reference_statistics``, JSON): per numeric column the sorted
distinct values with their counts and the population std; per categorical column the
category counts. The current side is then one sort per numeric column (Wasserstein) or
one hash count per categorical column, read one column at a time from Parquet.

Prediction drift uses the same method on the ``prediction`` column and is reported apart:
it does not count towards the drifted-columns share (features only).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from scipy.spatial import distance

from driftloop.errors import DataError
from driftloop.formats import TabularSchema

PREDICTION = "prediction"
DRIFT_SHARE = 0.5  # Evidently's DataDriftPreset default: half the columns drifted
SMALL_REFERENCE = 1000  # Evidently switches tests above this many (clean) reference rows
DISTANCE_THRESHOLD = 0.1  # Evidently's default for Wasserstein (normed) and Jensen-Shannon
# Display names exactly as Evidently reports them (ValueDrift's resolved `method`).
WASSERSTEIN, JENSEN_SHANNON = "Wasserstein distance (normed)", "Jensen-Shannon distance"

Source: TypeAlias = pd.DataFrame | pa.Table | str | Path | Sequence[str | Path]


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # "numeric" | "categorical"
    stattest: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    columns: dict[str, ColumnDrift]  # feature columns only
    prediction: ColumnDrift | None  # None when the reference has no prediction column
    drifted_share: float
    dataset_drift: bool
    drift_share: float
    reference_rows: int
    current_rows: int
    # Features with no value in the window (or in the reference), so not tested: a finding,
    # not drift (a holiday column is legitimately empty in a month without holidays).
    missing_columns: list[str] = field(default_factory=list)
    # Feature -> share of the window's rows without a (finite) value, where above zero.
    missing_shares: dict[str, float] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [c for c, d in self.columns.items() if d.drifted]

    def to_dict(self) -> dict:
        return asdict(self) | {"drifted_columns": self.drifted_columns}


# -- 1. Reference side, precomputed at registration ------------------------------------
def monitored_columns(schema: TabularSchema) -> dict[str, str]:
    """Feature name -> kind, from the model's input schema."""
    return schema.kinds


def reference_statistics(
    sample_df: pd.DataFrame, schema: TabularSchema, *, allow_missing: bool = False
) -> dict:
    """JSON-serialisable statistics of the reference sample (``reference/stats.json``).

    A column without any value is an error at registration; ``allow_missing`` keeps it
    (``n`` 0) when the reference is an earlier window, whose columns may be empty."""
    kinds = monitored_columns(schema)
    if PREDICTION in sample_df.columns:
        kinds[PREDICTION] = "numeric"
    missing = [c for c in kinds if c not in sample_df.columns]
    if missing:
        raise DataError(f"reference sample lacks column(s) {missing} named in the schema")
    cols = {}
    for name, kind in kinds.items():
        st = _stats(_as_arrow(sample_df[name]), name, kind, "reference")
        if st["n"] == 0 and not allow_missing:
            raise DataError(f"column {name!r} has only missing values in the reference data")
        if kind == "numeric":  # sorted distinct values + counts: exact, and small in JSON
            st = {
                "kind": kind,
                "n": st["n"],
                "std": float(np.std(st["sorted"])) if st["n"] else 0.0,
                "values": st["values"].tolist(),
                "counts": st["counts"].tolist(),
            }
        cols[name] = st
    return {"version": 1, "rows": len(sample_df), "columns": cols}


def _stats(col: pa.ChunkedArray | pa.Array, name: str, kind: str, side: str) -> dict:
    """One column's sufficient statistics (in memory; numpy arrays for numerics)."""
    if kind == "numeric":
        values = _numeric(col, name, side)
        if values.size == 0:
            return {"kind": kind, "n": 0, "sorted": values, "values": values, "counts": values}
        # Distinct values and counts from the sorted array: run lengths, no second sort.
        starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
        counts = np.diff(np.append(starts, values.size))
        return {
            "kind": kind,
            "n": int(values.size),
            "sorted": values,
            "values": values[starts],
            "counts": counts,
        }
    counts_map = _category_counts(col, name, side)
    return {"kind": kind, "n": sum(counts_map.values()), "counts": counts_map}


def _numeric(col: pa.ChunkedArray | pa.Array, name: str, side: str) -> np.ndarray:
    """The finite values, sorted (empty when none: the caller reports the column)."""
    if col.null_count == len(col):  # every value null: whatever type a writer guessed
        return np.empty(0, dtype=np.float64)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataError(
            f"column {name!r} in the {side} data should be numeric but holds "
            f"{col.type} values; fix the producer or the schema"
        )
    values = pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()
    values = values[np.isfinite(values)]  # Evidently drops NaN and +-inf first
    values.sort()
    return values


def _category_counts(col: pa.ChunkedArray | pa.Array, name: str, side: str) -> dict[str, int]:
    if col.null_count == len(col):  # every value null: whatever type a writer guessed
        return {}
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(
            f"column {name!r} in the {side} data should be categorical (strings) "
            f"but holds {col.type} values; fix the producer or the schema"
        )
    vc = pc.value_counts(col)  # hash count in C++; nulls come back as a null key
    keys, counts = vc.field("values").to_pylist(), vc.field("counts").to_pylist()
    return {k: int(n) for k, n in zip(keys, counts, strict=True) if k is not None}


def _as_arrow(s: pd.Series) -> pa.Array:
    try:
        return pa.array(s, from_pandas=True)  # NaN -> null; mixed object types raise
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"column {s.name!r} mixes value types ({e}); fix the producer") from e


def save_statistics(stats: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(stats))


def load_statistics(text: str | bytes) -> dict:
    return dict(json.loads(text))


# -- 2. Current side, one column at a time ---------------------------------------------
def window_rows(source: Source) -> int:
    if isinstance(source, pd.DataFrame | pa.Table):
        return len(source)
    return _dataset(source).count_rows()


def window_columns(source: Source, names: Sequence[str]) -> Iterator[tuple[str, pa.ChunkedArray]]:
    """Yield (name, column) one at a time, so a window's RSS is one column, not the table.

    A DataFrame or Table is already in memory; Parquet file(s) are read column by column
    (Parquet is columnar: reading one column touches only its pages).
    """
    available = _columns_of(source)
    missing = [c for c in names if c not in available]
    if missing:
        raise DataError(
            f"column(s) {missing} are missing from the current window "
            f"(it has: {sorted(available)[:30]})"
        )
    for name in names:
        if isinstance(source, pd.DataFrame):
            yield name, pa.chunked_array([_as_arrow(source[name])])
        elif isinstance(source, pa.Table):
            yield name, source.column(name)
        else:
            yield name, _dataset(source).to_table(columns=[name]).column(name)


def _dataset(source: Source) -> ds.Dataset:
    paths = [str(source)] if isinstance(source, str | Path) else [str(p) for p in source]
    return ds.dataset(paths, format="parquet")


def _columns_of(source: Source) -> set[str]:
    if isinstance(source, pd.DataFrame):
        return set(map(str, source.columns))
    if isinstance(source, pa.Table):
        return set(source.column_names)
    return set(_dataset(source).schema.names)


# -- 3. The tests -----------------------------------------------------------------------
def column_drift(
    reference: dict | pd.DataFrame,
    current: Source,
    schema: TabularSchema,
    drift_share: float = DRIFT_SHARE,
) -> DriftResult:
    """Drift of ``current`` (DataFrame, Arrow table, Parquet path(s)) against ``reference``
    (``reference_statistics`` output, or the reference sample itself)."""
    stats = (
        reference
        if isinstance(reference, dict)
        else reference_statistics(reference, schema, allow_missing=True)
    )
    features = monitored_columns(schema)
    names = list(features) + ([PREDICTION] if PREDICTION in stats["columns"] else [])
    missing_ref = [c for c in features if c not in stats["columns"]]
    if missing_ref:
        raise DataError(f"reference statistics lack column(s) {missing_ref}: re-register")
    rows = window_rows(current)
    if rows == 0:
        raise DataError("empty window: the current window holds no rows; nothing to compare")
    results: dict[str, ColumnDrift] = {}
    missing: list[str] = []
    shares: dict[str, float] = {}
    for name, col in window_columns(current, names):
        ref = stats["columns"][name]
        cur = _stats(col, name, ref["kind"], "current")
        if cur["n"] < rows:
            shares[name] = 1 - cur["n"] / rows
        if cur["n"] == 0 or ref["n"] == 0:  # nothing to compare: a finding, not a test
            missing.append(name)
            continue
        results[name] = _one_column(name, ref, cur)
    pred = results.pop(PREDICTION, None)
    n_drifted = sum(d.drifted for d in results.values())
    share = n_drifted / len(results) if results else 0.0
    return DriftResult(
        columns=results,
        prediction=pred,
        drifted_share=share,
        dataset_drift=bool(share >= drift_share),
        drift_share=drift_share,
        reference_rows=int(stats["rows"]),
        current_rows=rows,
        missing_columns=[c for c in missing if c != PREDICTION],
        missing_shares={c: v for c, v in shares.items() if c != PREDICTION},
    )


def _one_column(name: str, ref: dict, cur: dict) -> ColumnDrift:
    kind = ref["kind"]
    if ref["n"] <= SMALL_REFERENCE:
        return _evidently_small(name, ref, cur)
    if kind == "numeric":
        r_vals = np.asarray(ref["values"], dtype=np.float64)
        c_sorted = cur["sorted"]
        if r_vals.size <= 5 and np.union1d(r_vals, cur["values"]).size <= 5:
            # Few distinct numbers: Evidently treats them like categories (value shares).
            score = _js(
                dict(zip(ref["values"], ref["counts"], strict=True)),
                ref["n"],
                dict(zip(cur["values"].tolist(), cur["counts"].tolist(), strict=True)),
                cur["n"],
            )
            test = JENSEN_SHANNON
        else:
            score = _wasserstein(r_vals, np.asarray(ref["counts"]), c_sorted) / max(
                float(ref["std"]), 0.001
            )
            test = WASSERSTEIN
    else:
        score, test = _js(ref["counts"], ref["n"], cur["counts"], cur["n"]), JENSEN_SHANNON
    return ColumnDrift(
        name, kind, test, score, DISTANCE_THRESHOLD, bool(score >= DISTANCE_THRESHOLD)
    )


def _wasserstein(r_vals: np.ndarray, r_counts: np.ndarray, c_sorted: np.ndarray) -> float:
    """W1 between the weighted reference and the sorted current: scipy's ``_cdf_distance``
    with the reference sort done at registration and the current sorted once."""
    allv = np.concatenate([r_vals, c_sorted])
    allv.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
    deltas = np.diff(allv)
    x = allv[:-1]
    r_cum = np.concatenate([[0], np.cumsum(r_counts)])
    r_cdf = r_cum[np.searchsorted(r_vals, x, "right")] / r_cum[-1]
    c_cdf = np.searchsorted(c_sorted, x, "right") / c_sorted.size
    return float(np.dot(np.abs(r_cdf - c_cdf), deltas))


def _js(ref_counts: dict, n_ref: int, cur_counts: dict, n_cur: int) -> float:
    """Evidently's ``get_binned_data`` (no zero filling) + scipy's Jensen-Shannon distance."""
    keys = list(set(ref_counts) | set(cur_counts))
    p = np.array([ref_counts.get(k, 0) / n_ref for k in keys])
    q = np.array([cur_counts.get(k, 0) / n_cur for k in keys])
    return float(distance.jensenshannon(p, q))


def _evidently_small(name: str, ref: dict, cur: dict) -> ColumnDrift:
    """<= 1,000 reference rows: Evidently's own test selection and functions, verbatim."""
    _import_evidently()
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Numerical if ref["kind"] == "numeric" else ColumnType.Categorical
    r = _expand(ref)
    c = pd.Series(cur["sorted"]) if ref["kind"] == "numeric" else _expand(cur)
    test = get_stattest(r, c, ctype, None)
    out = test(r, c, ctype, None)
    return ColumnDrift(
        name,
        ref["kind"],
        test.display_name,
        float(out.drift_score),
        float(out.actual_threshold),
        bool(out.drifted),
    )


def _expand(s: dict) -> pd.Series:
    """Values back from (value, count) statistics; order is irrelevant to these tests."""
    if s["kind"] == "numeric":
        return pd.Series(np.repeat(np.asarray(s["values"], dtype=np.float64), s["counts"]))
    keys = list(s["counts"])
    return pd.Series(np.repeat(np.array(keys, dtype=object), [s["counts"][k] for k in keys]))


# -- 4. The Evidently report: HTML for humans, typed results for the record ------------
def _import_evidently() -> None:
    """Import Evidently once, lazily (the fast path never needs it: ~1 s and ~150 MB).

    ``import evidently`` loads its UI, which uses litestar APIs deprecated in litestar 2.23;
    litestar warns from its own module, so pyproject's ``evidently.*`` filter misses it.
    Silence exactly those messages, only around this import.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*Deprecated in litestar", category=DeprecationWarning
        )
        import evidently  # noqa: F401


def evidently_report(
    reference: pd.DataFrame,
    current: Source,
    schema: TabularSchema,
    html_path: str | Path,
    sample_rows: int = 10_000,
    seed: int = 0,
) -> dict:
    """Run Evidently's ``DataDriftPreset`` on a seeded random sample of ``sample_rows``
    current rows (the HTML embeds data, so it must stay bounded) and save the HTML.

    When the current window carries the schema's target column (delayed labels joined by
    request id; null where no label yet), quality metrics are computed on up to
    ``sample_rows`` labelled rows (seeded) and saved next to it as ``<name>.quality.html``.
    Returns ``{"drift": …, "quality": {metric: value} | None, "sample": …, "snapshot": …}``.
    """
    _import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    features = monitored_columns(schema)
    target = schema.target
    cols = list(features) + [PREDICTION] + ([target] if target in _columns_of(current) else [])
    table = _arrow_table(current, cols)
    rows = table.num_rows
    if rows == 0:
        raise DataError("empty window: the current window holds no rows; nothing to report")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(rows, size=min(sample_rows, rows), replace=False))
    cur = table.take(pa.array(take)).to_pandas()
    # Evidently refuses a column with no value on a side: those are left out of its report
    # (``column_drift`` lists them as missing_columns).
    features = {
        c: k for c, k in features.items() if _has_values(cur[c], k) and _has_values(reference[c], k)
    }
    numeric = [c for c, k in features.items() if k == "numeric"]
    categorical = [c for c, k in features.items() if k == "categorical"]
    definition = DataDefinition(  # every list given: Evidently infers no column type
        numerical_columns=numeric + [PREDICTION],
        categorical_columns=categorical,
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    metrics: list[Any] = [DataDriftPreset(columns=list(features))] if features else []
    report = Report([*metrics, ValueDrift(column=PREDICTION)], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(cur[[*features, PREDICTION]], definition),
        Dataset.from_pandas(reference[[*features, PREDICTION]], definition),
    )
    snapshot.save_html(str(html_path))
    quality = None
    if target in table.column_names:
        quality = _quality(table, schema, Path(html_path), sample_rows, rng)
    return {
        "drift": evidently_decisions(snapshot),
        "quality": quality,
        "sample": {"rows": int(take.size), "of": rows, "seed": seed},
        "snapshot": snapshot.dict(),
    }


def _has_values(s: pd.Series, kind: str) -> bool:
    """At least one value Evidently keeps (it drops nulls, NaN and +-inf)."""
    if kind == "numeric":
        values = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return bool(np.isfinite(values).any())
    return bool(s.notna().any())


def evidently_decisions(snapshot: Any) -> dict:
    """Per-column drift and the dataset decision, from the snapshot's typed test results."""
    from evidently.core.metric_types import CountValue
    from evidently.legacy.tests.base_test import TestStatus

    columns, share, dataset_drift = {}, None, None
    for t in snapshot.tests_results:
        params, result = t.metric_config.params, snapshot.metric_results[t.metric_config.metric_id]
        if isinstance(result, CountValue):  # DriftedColumnsCount: share < drift_share passes
            share, dataset_drift = float(result.share.value), t.status == TestStatus.FAIL
        else:  # ValueDrift: the test fails exactly when Evidently detects drift
            columns[params["column"]] = {
                "stattest": params["method"],
                "score": float(result.value),
                "threshold": float(params["threshold"]),
                "drifted": t.status == TestStatus.FAIL,
            }
    return {"columns": columns, "drifted_share": share, "dataset_drift": dataset_drift}


def _arrow_table(source: Source, cols: list[str]) -> pa.Table:
    missing = [c for c in cols if c not in _columns_of(source)]
    if missing:
        raise DataError(f"column(s) {missing} are missing from the current window")
    if isinstance(source, pd.DataFrame):
        return pa.table({c: _as_arrow(source[c]) for c in cols})
    if isinstance(source, pa.Table):
        return source.select(cols)
    return _dataset(source).to_table(columns=cols)


def _quality(
    table: pa.Table,
    schema: TabularSchema,
    html_path: Path,
    sample_rows: int,
    rng: np.random.Generator,
) -> dict[str, float] | None:
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.metrics import MAE, RMSE, Accuracy, F1Score, Precision, Recall, RocAuc

    target = schema.target
    labelled = np.flatnonzero(table.column(target).is_valid().to_numpy(zero_copy_only=False))
    if labelled.size == 0:
        return None
    take = np.sort(rng.choice(labelled, size=min(sample_rows, labelled.size), replace=False))
    df = table.select([target, PREDICTION]).take(pa.array(take)).to_pandas()
    if schema.task == "regression":
        df[target] = df[target].astype("float64")
        definition = DataDefinition(
            numerical_columns=[target, PREDICTION],
            regression=[Regression(target=target, prediction=PREDICTION)],
        )
        metrics: dict[str, Any] = {"rmse": RMSE(), "mae": MAE()}
    elif schema.task == "binary":
        definition = DataDefinition(
            categorical_columns=[target],
            numerical_columns=[PREDICTION],
            classification=[
                BinaryClassification(
                    target=target, prediction_probas=PREDICTION, pos_label=schema.positive_label
                )
            ],
        )
        # The served labels use the version's tuned threshold, not Evidently's 0.5: score
        # the window the way it was served, or F1 on rare positives reads as zero.
        t = schema.threshold
        metrics = {
            "accuracy": Accuracy(probas_threshold=t),
            "precision": Precision(probas_threshold=t),
            "recall": Recall(probas_threshold=t),
            "f1": F1Score(probas_threshold=t),
            "roc_auc": RocAuc(),
        }
    else:
        return None  # multiclass logs carry no per-class probabilities to evaluate on
    snap = Report(list(metrics.values())).run(Dataset.from_pandas(df, definition), None)
    snap.save_html(str(html_path.with_suffix(".quality.html")))
    out = {}
    for name, metric in metrics.items():
        value = snap.context.get_metric_result(metric)
        value = getattr(value, "mean", value)  # MAE is a MeanStdValue
        out[name] = float(value.value)
    return out | {"rows": float(take.size)}
