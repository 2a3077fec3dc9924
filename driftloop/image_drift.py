"""Drift of image traffic: the model's embedding, and each image statistic.

What an image model's payload log keeps per request (``FittedModel.predict_logged``): the
embedding (``emb_0`` .. ``emb_k``, the network's penultimate layer), the image statistics
(brightness, contrast, sharpness: ``driftloop.images``), the predicted label and its
probability. The drift job compares a window of them with a reference precomputed at
registration from the training images (``reference``):

1. **Embedding drift** with Evidently's embedding drift methods
   (``evidently.legacy.metrics.data_drift.embedding_drift_methods``), by default its
   domain classifier (``ModelDriftMethod``: an SGD logistic regression learns to tell
   reference from current embeddings on half of both; drift when its ROC AUC on the
   other half exceeds ``THRESHOLD``, 0.65 rather than Evidently's 0.55: see there). One
   decision, reported as the column ``embedding``.
2. **Per-statistic drift** exactly as tabular columns drift (``driftloop.drift``:
   Evidently's tests and thresholds from precomputed statistics), and prediction drift on
   the logged probability (reported apart, as for tabular models).
3. The drifted share is over the embedding and the statistics (4 signals): with the
   default policy (``drift_share: 0.5``) two must drift; ``key_features: [embedding]``
   makes the embedding alone enough.

The reference embeddings (up to ``REFERENCE_ROWS``, rounded to 5 decimals) are stored in
``reference/stats.json`` next to the statistics' precomputed values.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.data import TIME
from driftloop.drift import (
    DRIFT_SHARE,
    PREDICTION,
    ColumnDrift,
    DriftResult,
    Source,
    _arrow_table,
    _import_evidently,
    column_drift,
    evidently_decisions,
    reference_statistics,
)
from driftloop.errors import DataError
from driftloop.formats import ImageSchema, TabularSchema

EMBEDDING = "embedding"
# Reference images: the domain classifier trains on half of reference + current, so a few
# thousand keep its ROC AUC stable on windows of a few hundred images, and stats.json small.
REFERENCE_ROWS = 2_000
METHOD = "domain classifier (Evidently ModelDriftMethod, ROC AUC)"
# ModelDriftMethod's default is 0.55. Here the reference embeddings are of training images,
# which a model fits more tightly than new ones: on windows of 1,000 held-out digits the
# classifier's ROC AUC against them reached 0.59 (50 windows) with no corruption at all,
# while a mild corruption (bench/image.py, severity 1/3) lifts it far past 0.65.
THRESHOLD = 0.65


def _statistics_schema(schema: ImageSchema) -> TabularSchema:
    return TabularSchema.of_columns(numeric=list(schema.statistics), categorical=[])


def reference(model: Any, train: pd.DataFrame, schema: ImageSchema) -> tuple[pd.DataFrame, dict]:
    """At registration: a seeded sample of training images as the model logs them
    (embedding, statistics, prediction, label) and its statistics for drift."""
    sample = train.sample(n=min(REFERENCE_ROWS, len(train)), random_state=0)
    sample = sample.sort_values(TIME).reset_index(drop=True)
    pred, logged = model.predict_logged(sample)
    out = pd.DataFrame(logged)
    out[PREDICTION] = pred["probability"]
    out["label"] = pred["label"]
    out[schema.target] = sample[schema.target].to_numpy()
    out[TIME] = sample[TIME].to_numpy()
    stats = reference_statistics(out, _statistics_schema(schema))
    emb = np.round(out[schema.embedding].to_numpy(np.float64), 5)
    stats[EMBEDDING] = {"columns": list(schema.embedding), "values": emb.tolist()}
    return out, stats


def embedding_drift(reference_emb: np.ndarray, current_emb: np.ndarray) -> ColumnDrift:
    """Evidently's domain classifier on two embedding matrices."""
    _import_evidently()
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import ModelDriftMethod
    from sklearn.exceptions import ConvergenceWarning

    cols = [f"e{i}" for i in range(reference_emb.shape[1])]
    with warnings.catch_warnings():
        # SGD on unscaled embeddings may stop at max_iter; its AUC is still the decision.
        warnings.simplefilter("ignore", ConvergenceWarning)
        score, drifted, _ = ModelDriftMethod(threshold=THRESHOLD)(
            pd.DataFrame(current_emb, columns=cols), pd.DataFrame(reference_emb, columns=cols)
        )
    return ColumnDrift(EMBEDDING, EMBEDDING, METHOD, float(score), THRESHOLD, bool(drifted))


def _embeddings(window: Source, schema: ImageSchema) -> np.ndarray:
    table = _arrow_table(window, list(schema.embedding))
    emb = np.column_stack([table.column(c).to_numpy() for c in schema.embedding])
    emb = emb.astype(np.float64)
    if emb.size and not np.isfinite(emb).all():
        raise DataError("the window's logged embeddings hold NaN or inf: fix the producer")
    return emb


def image_drift(stats: dict, window: Source, schema: ImageSchema) -> DriftResult:
    """One window's drift: the embedding as one decision, then each statistic."""
    if EMBEDDING not in stats:
        raise DataError("reference statistics hold no embeddings: re-register the version")
    columns = column_drift(stats, window, _statistics_schema(schema))
    current = _embeddings(window, schema)
    ref = np.asarray(stats[EMBEDDING]["values"], dtype=np.float64)
    results = {EMBEDDING: embedding_drift(ref, current), **columns.columns}
    share = sum(d.drifted for d in results.values()) / len(results)
    return DriftResult(
        columns=results,
        prediction=columns.prediction,
        drifted_share=share,
        dataset_drift=bool(share >= DRIFT_SHARE),
        drift_share=DRIFT_SHARE,
        reference_rows=int(stats["rows"]),
        current_rows=columns.current_rows,
        missing_columns=columns.missing_columns,
        missing_shares=columns.missing_shares,
    )


def image_report(
    reference: pd.DataFrame,
    window: Source,
    schema: ImageSchema,
    html_path: str | Path,
    sample_rows: int = 5_000,
    seed: int = 0,
) -> dict:
    """Evidently's report on a seeded sample of the window: embedding drift
    (``EmbeddingsDrift``), the statistics (``DataDriftPreset``) and the prediction
    (``ValueDrift``); accuracy of the logged labels on rows whose ground truth arrived."""
    _import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset

    stats_cols, emb_cols = list(schema.statistics), list(schema.embedding)
    cols = [*emb_cols, *stats_cols, PREDICTION, "label"]
    target = schema.target
    table = _arrow_table(window, cols + ([target] if target in _names(window) else []))
    rows = table.num_rows
    if rows == 0:
        raise DataError("empty window: the current window holds no rows; nothing to report")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(rows, size=min(sample_rows, rows), replace=False))
    cur = table.to_pandas().iloc[take]
    definition = DataDefinition(
        numerical_columns=[*emb_cols, *stats_cols, PREDICTION],
        categorical_columns=[],
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
        embeddings={EMBEDDING: emb_cols},
    )
    report = Report(
        [
            EmbeddingsDrift(
                embeddings_name=EMBEDDING, drift_method=ModelDriftMethod(threshold=THRESHOLD)
            ),
            DataDriftPreset(columns=stats_cols),
            ValueDrift(column=PREDICTION),
        ],
        include_tests=True,
    )
    keep = [*emb_cols, *stats_cols, PREDICTION]
    with warnings.catch_warnings():
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        snapshot = report.run(
            Dataset.from_pandas(cur[keep].reset_index(drop=True), definition),
            Dataset.from_pandas(reference[keep], definition),
        )
    snapshot.save_html(str(html_path))
    quality = None
    if target in cur.columns:
        labelled = cur[cur[target].notna()]
        if len(labelled):
            hit = labelled["label"].astype(str) == labelled[target].astype(str)
            quality = {"accuracy": float(hit.mean()), "rows": float(len(labelled))}
    return {
        "drift": evidently_decisions(snapshot),
        "quality": quality,
        "sample": {"rows": int(take.size), "of": rows, "seed": seed},
        "snapshot": None,
    }


def _names(window: Source) -> set[str]:
    from driftloop.drift import _columns_of

    return _columns_of(window)
