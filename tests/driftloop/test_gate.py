from driftloop.gate import decide

BASE = {"dumb": {"rmse": 100.0}, "gbm": {"rmse": 50.0}}


def test_passes_when_beating_baselines_without_champion():
    d = decide("rmse", {"rmse": 45.0}, BASE, None, margin=0.05)
    assert d.passed and "no champion in production" in d.summary


def test_fails_when_gbm_reference_is_better():
    d = decide("rmse", {"rmse": 55.0}, BASE, None, margin=0.0)
    assert not d.passed and "does not beat gbm baseline" in d.summary


def test_champion_must_be_beaten_by_the_margin():
    assert decide("rmse", {"rmse": 45.0}, BASE, {"rmse": 46.0}, margin=0.0).passed
    d = decide("rmse", {"rmse": 45.0}, BASE, {"rmse": 46.0}, margin=0.05)
    assert not d.passed and "does not beat champion" in d.summary


def test_higher_is_better_metrics():
    base = {"dumb": {"roc_auc": 0.5}, "gbm": {"roc_auc": 0.7}}
    assert decide("roc_auc", {"roc_auc": 0.75}, base, {"roc_auc": 0.72}, 0.01).passed
    assert not decide("roc_auc", {"roc_auc": 0.75}, base, {"roc_auc": 0.745}, 0.01).passed
