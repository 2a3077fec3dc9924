"""The gate: a floor no served model may fall below, then the champion by the margin;
references are reported, never required."""

from driftloop.gate import decide

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
