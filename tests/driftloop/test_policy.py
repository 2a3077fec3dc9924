"""driftloop.policy: each rule, hysteresis, cooldown, in-flight, min_rows, YAML loading.

.venv/bin/python -m pytest -q tests/driftloop/test_policy.py
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from driftloop.errors import ConfigError
from driftloop.policy import DriftPolicy, WindowSummary, decide, load_policy

T0 = datetime(2012, 1, 1)
HOUR = timedelta(hours=1)


def win(
    i: int = 0,
    rows: int = 1000,
    share: float = 0.0,
    cols: tuple = (),
    pred: bool = False,
    quality: dict | None = None,
    baseline: dict | None = None,
) -> WindowSummary:
    start = T0 + i * 24 * HOUR
    return WindowSummary(start, start + 24 * HOUR, rows, share, list(cols), pred, quality, baseline)


def run(
    policy: DriftPolicy,
    current: WindowSummary,
    history: list | None = None,
    last: datetime | None = None,
    in_flight: bool = False,
    completed: datetime | None = None,
):
    return decide(
        policy,
        history or [],
        current,
        now=current.end,
        last_trigger_time=last,
        run_in_flight=in_flight,
        last_completed=completed,
    )


def test_quiet_window_does_not_trigger() -> None:
    d = run(DriftPolicy(), win(share=0.2, cols=("temp",)))
    assert not d.trigger and d.reasons == ["no rule fired"]


def test_drifted_share_at_threshold_triggers() -> None:
    assert run(DriftPolicy(), win(share=0.5)).trigger  # >=, as Evidently's dataset drift
    assert not run(DriftPolicy(), win(share=0.49)).trigger
    assert run(DriftPolicy(drift_share=0.3), win(share=0.3)).trigger


def test_key_feature_drift_triggers() -> None:
    policy = DriftPolicy(key_features=["hr"])
    d = run(policy, win(share=0.1, cols=("hr",)))
    assert d.trigger and "key feature(s) drifted: hr" in d.reasons
    assert not run(policy, win(share=0.1, cols=("temp",))).trigger


def test_prediction_drift_triggers_unless_disabled() -> None:
    assert run(DriftPolicy(on_prediction_drift=True), win(pred=True)).reasons == [
        "prediction drift"
    ]
    assert not run(DriftPolicy(), win(pred=True)).trigger  # off by default: noisy alone


def test_quality_drop_relative_to_test_metric() -> None:
    base = {"rmse": 50.0, "r2": 0.8}
    assert run(DriftPolicy(), win(quality={"rmse": 55.0, "rows": 500}, baseline=base)).trigger
    assert not run(DriftPolicy(), win(quality={"rmse": 54.0, "rows": 500}, baseline=base)).trigger
    # Higher-is-better metrics drop the other way.
    auc = {"roc_auc": 0.9}
    assert run(DriftPolicy(), win(quality={"roc_auc": 0.8, "rows": 500}, baseline=auc)).trigger
    assert not run(DriftPolicy(), win(quality={"roc_auc": 0.95, "rows": 500}, baseline=auc)).trigger
    # Too few labelled rows, or the rule disabled, or another metric chosen: no trigger.
    assert not run(DriftPolicy(), win(quality={"rmse": 90.0, "rows": 20}, baseline=base)).trigger
    assert not run(
        DriftPolicy(max_quality_drop=None), win(quality={"rmse": 90.0, "rows": 500}, baseline=base)
    ).trigger
    assert not run(
        DriftPolicy(quality_metric="r2"),
        win(quality={"rmse": 90.0, "r2": 0.79, "rows": 500}, baseline=base),
    ).trigger


def test_min_rows_blocks_small_windows() -> None:
    d = run(DriftPolicy(), win(rows=299, share=1.0))
    assert not d.trigger and "min_rows" in d.reasons[0]
    assert run(DriftPolicy(), win(rows=300, share=1.0)).trigger


def test_hysteresis_needs_k_consecutive_signalling_windows() -> None:
    policy = DriftPolicy(consecutive_windows=2)
    assert not run(policy, win(1, share=1.0), [win(0)]).trigger
    assert run(policy, win(1, share=1.0), [win(0, share=1.0)]).trigger
    # A quiet window in between breaks the streak; a too-small one is skipped.
    assert not run(policy, win(2, share=1.0), [win(0, share=1.0), win(1)]).trigger
    assert run(policy, win(2, share=1.0), [win(0, share=1.0), win(1, rows=10)]).trigger


def test_hysteresis_ignores_windows_before_the_last_trigger() -> None:
    policy = DriftPolicy(consecutive_windows=2, cooldown=timedelta(0))
    history = [win(0, share=1.0)]
    assert not run(policy, win(1, share=1.0), history, last=history[0].end).trigger


def test_cooldown_after_a_completed_retraining() -> None:
    policy = DriftPolicy(cooldown="12h")
    current = win(0, share=1.0)
    t11 = current.end - timedelta(hours=11)
    d = run(policy, current, last=t11, completed=t11)
    assert not d.trigger and any("cooldown" in r for r in d.reasons)
    t12 = current.end - timedelta(hours=12)
    assert run(policy, current, last=t12, completed=t12).trigger
    # A trigger whose run failed or never finished starts no cooldown.
    assert run(policy, current, last=t11, completed=None).trigger


def test_never_while_a_run_is_in_flight() -> None:
    d = run(DriftPolicy(), win(share=1.0), in_flight=True)
    assert not d.trigger and "a triggered run is still in flight" in d.reasons


def test_load_policy_from_yaml(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("drift_share: 0.3\nkey_features: [hr]\nconsecutive_windows: 2\ncooldown: 2d\n")
    policy = load_policy(p)
    assert (
        policy.drift_share,
        policy.key_features,
        policy.consecutive_windows,
        policy.cooldown,
    ) == (0.3, ["hr"], 2, timedelta(days=2))
    p.write_text("cooldown: PT6H\n")
    assert load_policy(p).cooldown == timedelta(hours=6)
    p.write_text("")
    assert load_policy(p) == DriftPolicy()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("drift_share: 1.5\n", "drift_share"),
        ("consecutive_windows: 0\n", "consecutive_windows"),
        ("cooldown: soon\n", "cooldown"),
        ("drift_shar: 0.5\n", "drift_shar"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_policy_is_a_config_error_naming_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=field):
        load_policy(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("quality_metric: rsme\n", "quality_metric"),
        ("cooldown: 100000000d\n", "cooldown"),
        ("cooldown: -1d\n", "cooldown"),
    ],
)
def test_misspelt_or_absurd_policy_values_are_refused(tmp_path, text, message):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_policy(p)


def test_key_features_must_be_features_of_the_model():
    from driftloop.policy import check_policy

    policy = DriftPolicy(key_features=["temp", "hr", "tmep"])
    with pytest.raises(ConfigError, match=r"key_features \['tmep'\] are not features"):
        check_policy(policy, ["temp", "hr", "season"])
    check_policy(DriftPolicy(key_features=["hr"]), ["temp", "hr"])  # fine
