"""The gate: a floor no served model may fall below, then the champion by the margin;
references are reported, never required."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.data import TIME
from driftloop.formats import TimeWindow, TriggerRecord
from driftloop.gate import decide, gate_records, restore
from driftloop.metrics import scores
from driftloop.registry import Registry
from driftloop.spec import load_spec
from driftloop.steps import (
    earlier_scores,
    gate,
    ingest,
    refit_model,
    run_baselines,
    run_inprocess,
    sample_trials,
    split,
    train_trial,
    unseen_by_champion,
)
from driftloop.store import LocalStore
from driftloop.trigger import outcome
from tests.toy import toy_frame, write_toy

BASE = {"dumb": {"rmse": 100.0}, "gbm": {"rmse": 50.0}}


def test_passes_above_the_floor_without_a_champion():
    d = decide("rmse", {"rmse": 45.0}, BASE, None, margin=0.05)
    assert d.passed and "no champion in production" in d.summary
    assert (d.challenger, d.champion, d.floor) == (45.0, None, 100.0)


def test_a_challenger_that_beats_the_champion_is_not_refused_for_a_reference():
    # gbm scored 50 on the same window; the champion serves 70: the challenger (55) is an
    # improvement for users, so it is promoted. The reference is reported beside it.
    d = decide("rmse", {"rmse": 55.0}, BASE, {"rmse": 70.0, "version": 3}, margin=0.0)
    assert d.passed and "beats champion v3 70" in d.summary
    assert "for reference, gbm baseline 50" in d.summary


def test_below_the_floor_fails_even_without_a_champion():
    d = decide("rmse", {"rmse": 120.0}, BASE, None, margin=0.0)
    assert not d.passed and "does not beat the floor, the dumb baseline 100" in d.summary


def test_champion_must_be_beaten_by_the_margin():
    assert decide("rmse", {"rmse": 45.0}, BASE, {"rmse": 46.0}, margin=0.0).passed
    d = decide("rmse", {"rmse": 45.0}, BASE, {"rmse": 46.0}, margin=0.05)
    assert not d.passed and "does not beat champion" in d.summary


def test_higher_is_better_metrics():
    base = {"dumb": {"roc_auc": 0.5}, "gbm": {"roc_auc": 0.7}}
    assert decide("roc_auc", {"roc_auc": 0.75}, base, {"roc_auc": 0.72}, 0.01).passed
    assert not decide("roc_auc", {"roc_auc": 0.75}, base, {"roc_auc": 0.745}, 0.01).passed
    assert decide("roc_auc", {"roc_auc": 0.65}, base, {"roc_auc": 0.6}, 0.0).passed


def test_a_recommender_must_beat_most_popular():
    base = {"popular": {"ndcg10": 0.30}, "als": {"ndcg10": 0.35}}
    d = decide("ndcg10", {"ndcg10": 0.28}, base, None, 0.0, floor_name="popular")
    assert not d.passed and d.floor == 0.30
    assert decide("ndcg10", {"ndcg10": 0.32}, base, None, 0.0, floor_name="popular").passed


def test_an_earlier_version_that_beats_champion_and_challenger_is_restored():
    # The champion (v3) serves 70; the challenger 65 would pass, but v1 scores 50 on the
    # same window: v1 is the better candidate, so it is served again instead.
    d = decide(
        "rmse", {"rmse": 65.0}, BASE, {"rmse": 70.0, "version": 3}, 0.0, earlier={1: 50.0, 2: 80.0}
    )
    assert not d.passed and d.restore == 1 and d.verdict == "restore"
    assert d.summary.startswith("RESTORE v1: ") and "restore v1" in d.summary
    assert "v1 50, v2 80" in d.summary


def test_an_earlier_version_is_restored_when_the_challenger_fails():
    d = decide("rmse", {"rmse": 90.0}, BASE, {"rmse": 70.0, "version": 3}, 0.05, earlier={2: 60.0})
    assert d.verdict == "restore" and d.restore == 2


def test_earlier_versions_need_the_floor_and_the_margin_over_the_champion():
    champion = {"rmse": 70.0, "version": 3}
    # 69 is better than 70, but not by the 5 % margin; 120 is below the floor.
    d = decide("rmse", {"rmse": 90.0}, BASE, champion, 0.05, earlier={1: 69.0, 2: 120.0})
    assert d.verdict == "refuse" and d.restore is None
    # A challenger at least as good as the best earlier version is promoted (the fresher).
    d = decide("rmse", {"rmse": 55.0}, BASE, champion, 0.0, earlier={1: 55.0})
    assert d.verdict == "promote" and d.restore is None
    # No champion: there is nothing to replace, so nothing is restored.
    d = decide("rmse", {"rmse": 120.0}, BASE, None, 0.0, earlier={1: 50.0})
    assert d.verdict == "refuse"
    # A NaN score (a one-class window's ROC-AUC) is never a winner.
    d = decide("rmse", {"rmse": 90.0}, BASE, champion, 0.0, earlier={1: float("nan")})
    assert d.verdict == "refuse"


# -- the gate step on a real store: earlier versions compete, every decision is kept -------
def _regimes(n: int = 600) -> pd.DataFrame:
    """Three periods of the toy data: the target's dependence on ``a`` flips in the middle
    one, so a model of the first period is right again in the third."""
    parts = []
    for i, sign in enumerate((1.0, -1.0, 1.0)):
        f = toy_frame(n, seed=i)
        f["y"] = sign * 3 * f["a"] + 0.5 * f["b"]
        parts.append(f)
    out = pd.concat(parts, ignore_index=True)
    out["when"] = pd.date_range("2020-01-01", periods=len(out), freq="h").astype(str)
    out["row_id"] = range(len(out))
    return out


@pytest.fixture(scope="module")
def regimes(tmp_path_factory):
    root = tmp_path_factory.mktemp("regimes")
    frame = _regimes()
    spec = load_spec(write_toy(root / "data", frame=frame))
    store = LocalStore(root / "store")
    t = pd.to_datetime(frame["when"])
    p2, p3 = str(t[600]), str(t[1200])
    trials = sample_trials(1, 0, "tabular-lgbm")
    # v1 learns the first period; v2, forced into production, the flipped second one.
    for lo, hi in (("", p2), (p2, p3)):
        ref, _ = run_inprocess(spec, store, lo, hi, trials, obey_gate=False)
        assert ref is not None
    return spec, store, p3, trials


def _copy(store, root: Path) -> LocalStore:
    copy = LocalStore(root)
    for key in store.list("models"):
        copy.put(key, store.get(key))
    return copy


def _bad_challenger(spec, p3, trials, d: Path) -> Path:
    """The third period's pipeline steps, with a challenger trained on shuffled targets."""
    ingest(spec, p3, "", d / "data.parquet")
    split(d / "data.parquet", spec, d / "train.parquet", d / "val.parquet", d / "test.parquet")
    train = pd.read_parquet(d / "train.parquet")
    train["y"] = np.random.default_rng(0).permutation(train["y"].to_numpy())
    train.to_parquet(d / "train.parquet", index=False)
    train_trial(d / "train.parquet", d / "val.parquet", spec, trials[0], d / "trial")
    return d / "trial"


def test_the_gate_restores_an_earlier_version_and_keeps_its_record(regimes, tmp_path):
    spec, store, p3, trials = regimes
    assert Registry(store).alias("toy", "production") == 2
    challenger = _bad_challenger(spec, p3, trials, tmp_path)
    base = run_baselines(
        tmp_path / "train.parquet", tmp_path / "val.parquet", tmp_path / "test.parquet", spec
    )
    decision, champion = gate(
        challenger, tmp_path / "test.parquet", spec, base, store, 0.0, "run-7", "trg-1"
    )
    assert champion is not None and champion["version"] == 2
    assert decision.verdict == "restore" and decision.restore == 1, decision.summary
    assert decision.earlier[1] < decision.champion  # rmse: v1 fits the third period
    (kept,) = gate_records(store, "toy", "trg-1")
    assert kept.verdict == "restore" and kept.restore == 1 and kept.run_id == "run-7"
    assert kept.family == "tabular-lgbm" and kept.champion_version == 2
    assert kept.reasons == decision.reasons and set(kept.earlier) == {"1"}
    # The trigger that started the run says what happened, with the gate's reasons.
    trig = TriggerRecord(
        id="trg-1",
        model="toy",
        version=2,
        reason=["test"],
        window=TimeWindow(),
        evidence={},
        train_window=TimeWindow(),
        status="succeeded",
    )
    assert outcome(store, trig).startswith("refused: ")  # not yet served again
    assert restore(store, "toy", decision.restore, decision.summary) == 1
    assert Registry(store).alias("toy", "production") == 1
    assert Registry(store).aliases("toy").production.reason.startswith("RESTORE v1: ")
    said = outcome(store, trig)
    assert said.startswith("restored v1: ") and "restore v1" in said
    assert trig.gate.startswith("models/toy/gates/") and store.exists(trig.gate)


def test_a_version_trained_on_the_test_window_is_not_a_candidate(regimes, tmp_path):
    spec, store, p3, trials = regimes
    copy = _copy(store, tmp_path / "store")
    # v3 saw every row of the third period, the test window included: judged on its own
    # training data it would look perfect, so it is not scored at all.
    run_inprocess(spec, copy, p3, "2100-01-01", trials, promote=False, obey_gate=False)
    assert Registry(copy).versions("toy") == [1, 2, 3]
    challenger = _bad_challenger(spec, p3, trials, tmp_path)
    df = pd.read_parquet(tmp_path / "test.parquet")
    assert set(earlier_scores(copy, spec, df, champion=2)) == {1}
    assert earlier_scores(copy, spec, df, champion=None) == {}
    assert challenger.exists()


def test_a_champion_is_judged_on_rows_it_never_trained_on(regimes, tmp_path):
    spec, store, p3, _ = regimes
    store = _copy(store, tmp_path / "store")
    Registry(store).promote("toy", 2)  # trained on [p2, p3); another test restores v1
    ingest(spec, "", "", tmp_path / "all.parquet")
    df = pd.read_parquet(tmp_path / "all.parquet")
    cut = pd.Timestamp(p3)
    window = df[
        (df[TIME] >= cut - pd.Timedelta(hours=100)) & (df[TIME] < cut + pd.Timedelta(hours=200))
    ]
    judged, note = unseen_by_champion(store, spec, window.reset_index(drop=True))
    assert len(judged) == 200 and judged[TIME].min() == cut
    assert note.startswith("compared with the champion on the 200 of 300 test rows after v2")
    # Too few unseen rows: the whole window, and the verdict says the champion is flattered.
    few = df[
        (df[TIME] >= cut - pd.Timedelta(hours=100)) & (df[TIME] < cut + pd.Timedelta(hours=10))
    ]
    judged, note = unseen_by_champion(store, spec, few.reset_index(drop=True))
    assert len(judged) == 110 and "trained on all but 10 of the 110 test rows" in note
    # A test window entirely after the champion's: nothing to say.
    after = df[df[TIME] >= cut].reset_index(drop=True)
    judged, note = unseen_by_champion(store, spec, after)
    assert judged is after and note == ""


def test_the_champion_comparison_uses_the_judged_rows():
    champion = {"rmse": 60.0, "version": 2}
    # On the whole window the challenger scores 65 (worse), on the rows the champion never
    # saw 55 (better): it is judged on the latter, and the note says so.
    d = decide("rmse", {"rmse": 65.0}, BASE, champion, 0.0, judged={"rmse": 55.0}, note="N")
    assert d.passed and "rmse 55 beats champion v2 60" in d.summary and "N" in d.reasons


def test_the_challenger_judged_is_its_recipe_refit_on_every_row_before_the_test(regimes, tmp_path):
    spec, store, p3, trials = regimes
    store = _copy(store, tmp_path / "store")
    d = tmp_path / "run"
    d.mkdir()
    challenger = _bad_challenger(spec, p3, trials, d)
    splits = (d / "train.parquet", d / "val.parquet")
    base = run_baselines(*splits, d / "test.parquet", spec)
    test = pd.read_parquet(d / "test.parquet")
    alone, _ = gate(challenger, d / "test.parquet", spec, base, store, 0.0)
    judged, _ = gate(challenger, d / "test.parquet", spec, base, store, 0.0, before_test=splits)
    history = pd.concat([pd.read_parquet(p) for p in splits], ignore_index=True)
    refit_score = scores(refit_model(challenger, history, spec).predict(test), test, spec)
    assert judged.challenger == pytest.approx(refit_score["rmse"])
    # The validation rows carry the real target (only the train split was shuffled):
    # refit on them too, the recipe is judged with what it would serve with.
    assert judged.challenger < alone.challenger
