"""Drift and quality of a recommender's traffic: popularity, new users and items, scores.

What the payload log keeps per request (``FittedModel.predict_logged``,
``formats.RECSYS_LOG_COLUMNS``): the user id, the user's activity bucket (``new`` for a user
the model does not know), the ranked items and the top score. Feedback (a later
interaction, posted to the collector's ``POST /labels`` under the request's id) joins as
the target: the item the user then interacted with. Per window, against the reference
computed at registration from the training interactions (``reference``):

    item_popularity  Jensen-Shannon distance between the feedback items' distribution and
                     the training interactions' (items the model does not know pooled as
                     one); drifted at POPULARITY_THRESHOLD          [feedback]
    new_items        share of feedback on items outside the catalogue; drifted at
                     NEW_ITEM_SHARE: what the model cannot recommend until retrained [feedback]
    user_activity    Jensen-Shannon distance of the known users' activity buckets (Evidently's
                     categorical test and threshold, ``driftloop.drift``)   [requests]
    new_users        share of requests by users the model does not know (served the
                     popularity fallback); drifted at NEW_USER_SHARE        [requests]
    prediction       the top score of known users (Wasserstein, Evidently's test), reported
                     apart like any model's prediction drift

The feedback signals need MIN_FEEDBACK labelled rows; without them they are left out of the
window (and of its drifted share). The policy reads them as any drift column: a
``key_features: [new_items]`` policy retrains on new items alone (data/movielens_policy.yaml).
Quality on feedback (``recsys_report``) uses the test split's protocol
(``driftloop.recsys_metrics``): per user with feedback in the window, their logged list
against the items they interacted with; Evidently's recommender metrics (NDCG, recall, hit
rate, MAP, popularity bias: ARP, coverage, Gini; personalisation) go into the report.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftloop.data import TIME
from driftloop.drift import (
    DRIFT_SHARE,
    JENSEN_SHANNON,
    ColumnDrift,
    DriftResult,
    Source,
    _arrow_table,
    _columns_of,
    _import_evidently,
    _js,
    column_drift,
    reference_statistics,
)
from driftloop.errors import DataError
from driftloop.formats import RECSYS_LOG_COLUMNS, InteractionsSchema, TabularSchema
from driftloop.recsys_metrics import K, ranking_metrics

if TYPE_CHECKING:
    from driftloop.spec import DatasetSpec

NEW = "new"
NEW_ITEM = "(new item)"
REFERENCE_ROWS = 20_000
# Feedback signals on fewer labelled interactions than this are noise (a popularity
# distribution over ~1,700 items needs hundreds of draws).
MIN_FEEDBACK = 200
# Measured on MovieLens-100K, a model trained on Sep-Dec 1997: random 6,000-interaction
# samples of those months sit at 0.17 (1,400 items: mostly sampling noise), the two-week
# windows of January 0.19-0.24, of February to April 0.24-0.34 (Evidently's 0.1 would flag
# every window, the training months' own samples included).
POPULARITY_THRESHOLD = 0.25
# Same model and windows: 0.7 % of January's feedback is on items it does not know, 3.2 %
# by late February, 5 % in April (new releases). Above 3 % the catalogue has moved.
NEW_ITEM_SHARE = 0.03
# Half the traffic by users with no history: the model serves the fallback to most.
NEW_USER_SHARE = 0.5
SHARE = "share of rows"


def _request_schema() -> TabularSchema:
    return TabularSchema.of_columns(numeric=["score"], categorical=["user_activity"])


def reference(
    model: Any, train: pd.DataFrame, spec: DatasetSpec, schema: InteractionsSchema
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """At registration: a seeded sample of the training interactions as the model logs them
    (user, activity, items, score, the item interacted with) and the statistics drift
    compares windows with: activity buckets, scores, item counts of every training row."""
    sample = train.sample(n=min(REFERENCE_ROWS, len(train)), random_state=0)
    sample = sample.sort_values(TIME, kind="stable").reset_index(drop=True)
    _, logged = model.predict_logged(sample)
    out = pd.DataFrame(logged)
    out[schema.target] = sample[spec.interaction_options.item].astype(str).to_numpy()
    out[TIME] = sample[TIME].to_numpy()
    stats = reference_statistics(out[["user_activity", "score"]], _request_schema())
    counts = train[spec.interaction_options.item].astype(str).value_counts()
    stats["items"] = {"n": int(counts.sum()), "counts": {str(k): int(v) for k, v in counts.items()}}
    return out, stats


def _share(name: str, hit: np.ndarray, threshold: float) -> ColumnDrift:
    share = float(hit.mean()) if hit.size else 0.0
    return ColumnDrift(name, "categorical", SHARE, share, threshold, bool(share >= threshold))


def _frame(window: Source, schema: InteractionsSchema) -> pd.DataFrame:
    cols = list(RECSYS_LOG_COLUMNS) + (
        [schema.target] if schema.target in _columns_of(window) else []
    )
    return _arrow_table(window, cols).to_pandas()


def recsys_drift(stats: dict[str, Any], window: Source, schema: InteractionsSchema) -> DriftResult:
    """One window's signals (module docstring)."""
    if "items" not in stats:
        raise DataError("reference statistics hold no item counts: re-register the version")
    df = _frame(window, schema)
    if df.empty:
        raise DataError("empty window: the current window holds no rows; nothing to compare")
    results: dict[str, ColumnDrift] = {}
    prediction = None
    # 1. Feedback: the items users then interacted with, against the training interactions.
    if schema.target in df.columns:
        fed = df[schema.target].dropna().astype(str)
        if len(fed) >= MIN_FEEDBACK:
            ref = stats["items"]["counts"]
            new = ~fed.isin(ref.keys()).to_numpy()
            cur = fed.where(~new, NEW_ITEM).value_counts().to_dict()
            score = _js(ref, stats["items"]["n"], cur, len(fed))
            results["item_popularity"] = ColumnDrift(
                "item_popularity",
                "categorical",
                JENSEN_SHANNON,
                score,
                POPULARITY_THRESHOLD,
                bool(score >= POPULARITY_THRESHOLD),
            )
            results["new_items"] = _share("new_items", new, NEW_ITEM_SHARE)
    # 2. Requests: who asks, and what the model answers known users.
    known = df[df["user_activity"] != NEW]
    if len(known):
        requests = column_drift(stats, known[["user_activity", "score"]], _request_schema())
        results["user_activity"] = requests.columns["user_activity"]
        prediction = requests.columns["score"]
    results["new_users"] = _share(
        "new_users", (df["user_activity"] == NEW).to_numpy(), NEW_USER_SHARE
    )
    share = sum(d.drifted for d in results.values()) / len(results)
    return DriftResult(
        columns=results,
        prediction=prediction,
        drifted_share=share,
        dataset_drift=bool(share >= DRIFT_SHARE),
        drift_share=DRIFT_SHARE,
        reference_rows=int(stats["rows"]),
        current_rows=len(df),
    )


def feedback_lists(df: pd.DataFrame, target: str) -> tuple[list[list[str]], list[set[str]]]:
    """Per user with feedback in the window: the list of their first labelled request, and
    the items they then interacted with (the test split's protocol, online)."""
    labelled = df[df[target].notna()]
    lists: dict[str, list[str]] = {}
    relevant: dict[str, set[str]] = {}
    for user, items, item in zip(
        labelled["user_id"], labelled["items"], labelled[target], strict=True
    ):
        u = str(user)
        if u not in lists:
            lists[u] = list(json.loads(items))
        relevant.setdefault(u, set()).add(str(item))
    users = list(lists)
    return [lists[u] for u in users], [relevant[u] for u in users]


def recsys_report(
    reference: pd.DataFrame,
    window: Source,
    schema: InteractionsSchema,
    html_path: str | Path,
    sample_rows: int = 5_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Evidently's report on a seeded sample of the window (activity and score drift; with
    feedback, its recommender metrics), and quality on feedback (``recsys_metrics``)."""
    _import_evidently()
    from evidently import DataDefinition, Dataset, Recsys, Report
    from evidently.metrics import MAP, NDCG, HitRate, Personalization, RecallTopK, ValueDrift
    from evidently.metrics.recsys import PopularityBiasMetric
    from evidently.presets import DataDriftPreset

    df = _frame(window, schema)
    if df.empty:
        raise DataError("empty window: the current window holds no rows; nothing to report")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(df), size=min(sample_rows, len(df)), replace=False))
    cur = df.iloc[take]
    known = cur[cur["user_activity"] != NEW]
    ref_known = reference[reference["user_activity"] != NEW]
    definition = DataDefinition(
        numerical_columns=["score"],
        categorical_columns=["user_activity"],
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    metrics: list[Any] = []
    if len(known):
        metrics += [DataDriftPreset(columns=["user_activity"]), ValueDrift(column="score")]
    quality, recsys = None, None
    lists, relevant = feedback_lists(df, schema.target) if schema.target in df else ([], [])
    if lists:
        quality = ranking_metrics(lists, relevant, schema.items)
        quality["rows"] = quality.pop("users")
    snapshot = None
    if metrics:
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(
                known[["user_activity", "score"]].reset_index(drop=True), definition
            ),
            Dataset.from_pandas(ref_known[["user_activity", "score"]], definition),
        )
    if lists:
        frame = evidently_frame(lists, relevant)
        train = reference[["user_id", schema.target]].rename(columns={schema.target: "item_id"})
        rdef = DataDefinition(
            numerical_columns=["rank", "target"],
            categorical_columns=["user_id", "item_id"],
            ranking=[
                Recsys(
                    user_id="user_id",
                    item_id="item_id",
                    target="target",
                    prediction="rank",
                    recommendations_type="rank",
                )
            ],
        )
        tdef = DataDefinition(categorical_columns=["user_id", "item_id"])
        named = {
            "ndcg10": NDCG(k=K),
            "recall10": RecallTopK(k=K),
            "hitrate10": HitRate(k=K),
            "map10": MAP(k=K),
            "arp": PopularityBiasMetric(k=K, metric="arp"),
            "coverage": PopularityBiasMetric(k=K, metric="coverage"),
            "gini": PopularityBiasMetric(k=K, metric="gini"),
            "personalisation": Personalization(k=K),
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Evidently's own pandas calls
            rsnap = Report(list(named.values())).run(
                Dataset.from_pandas(frame, rdef),
                None,
                additional_data={"current_train_data": Dataset.from_pandas(train, tdef)},
            )
        recsys = {
            name: _value(rsnap.context.get_metric_result(m), ndcg=name == "ndcg10")
            for name, m in named.items()
        }
        html = Path(html_path)
        rsnap.save_html(str(html.with_suffix(".recsys.html")))
    if snapshot is not None:
        snapshot.save_html(str(html_path))
    else:  # every request by new users: nothing to compare; say so in the report
        Path(html_path).write_text("<p>No known users in this window: only new-user share.</p>")
    decisions = None
    if snapshot is not None:
        from driftloop.drift import evidently_decisions

        decisions = evidently_decisions(snapshot)
    if recsys is not None:
        decisions = {**(decisions or {}), "recsys": recsys}
    return {
        "drift": decisions,
        "quality": quality,
        "sample": {"rows": int(take.size), "of": len(df), "seed": seed},
        "snapshot": None,
    }


def evidently_frame(lists: list[list[str]], relevant: list[set[str]], k: int = K) -> pd.DataFrame:
    """Evidently's ranking layout: one row per (user, item), ``rank`` 1..k for the listed
    items and after k for relevant items the list missed (so recall's denominator is |R|),
    ``target`` 1 for relevant items."""
    rows = []
    for u, (top, rel) in enumerate(zip(lists, relevant, strict=True)):
        top = [t for t in top[:k] if t != ""]
        for r, item in enumerate(top, 1):
            rows.append((f"u{u}", item, r, int(item in rel)))
        for r, item in enumerate(sorted(rel - set(top)), k + 1):
            rows.append((f"u{u}", item, r, 1))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rank", "target"])


def _value(result: Any, ndcg: bool = False) -> float:
    """A DataframeValue's value at rank k, or a single value. Evidently 0.7.23 labels NDCG's
    ranks one too high (its legacy NDCG series is indexed from 1 and the new API adds 1
    again, ``evidently/metrics/recsys.py`` ``calculate_value``): NDCG@k is its row k + 1."""
    value = getattr(result, "value", result)
    if isinstance(value, pd.DataFrame):
        at = value[value["rank"] == K + int(ndcg)]["value"]
        return float(at.iloc[0]) if len(at) else float(value["value"].iloc[-1])
    return float(value)
