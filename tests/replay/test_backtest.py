"""``driftloop backtest`` on a user's own spec (the toy data, no code change): every
strategy replayed side by side, the summary's figures computed from what was served, and
bad backtests refused before anything trains."""

import copy
import json

import numpy as np
import pandas as pd
import pytest

from driftloop.cli import main
from driftloop.policy import DriftPolicy
from driftloop.steps import sample_trials
from replay.backtest import (
    BacktestConfig,
    estimate_within_share,
    run_backtest,
    summarise,
    window_rows,
    write_outputs,
)
from tests.toy import toy_frame, write_toy

DAYS = 120


def _drifting(seed: int = 0) -> pd.DataFrame:
    """Four months, hourly; from the third month on the target's dependence on ``a``
    flips: a model of the first two months is wrong afterwards."""
    f = toy_frame(24 * DAYS, seed=seed)
    flip = np.arange(len(f)) >= 24 * 60
    f["y"] = np.where(flip, -3.0, 3.0) * f["a"] + 0.5 * f["b"]
    return f


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    spec_path = write_toy(root / "user", frame=_drifting())
    config = BacktestConfig(
        spec_path=str(spec_path),
        train_end="2020-02-15",
        window_days=7,
        label_delay_days=2,
        retrain_days=21,
        calendar_train_months=1,
        policy=DriftPolicy(min_rows=100),
        trials=sample_trials(1, 0, "tabular-lgbm"),
        report_rows=0,
        strategies=["driftloop", "static", "calendar_lgbm"],
    )
    out = run_backtest(config, workers=2)
    return config, out, root


def test_the_loop_recovers_from_the_flip_and_the_summary_adds_up(backtest):
    config, out, _ = backtest
    summary = summarise(config, out)
    assert summary["metric"] == "rmse"
    # The static model keeps predicting the first regime; the loop retrains after the
    # flip (its labels arrive two days late) and serves better; the figures are averages
    # of the monthly scores.
    res = out["results"]
    for name in config.strategies:
        assert summary[name] == pytest.approx(np.mean(res[name]["scores"]["rmse"]), abs=1e-3)
    assert summary["driftloop"] < summary["static"], summary
    assert summary["retrains"] >= 1 and summary["promotions"] >= 1
    assert summary["calendar_retrains"] == len(res["calendar_lgbm"]["retrains"]) >= 2
    assert summary["ratio_vs_lgbm"] == round(summary["driftloop"] / summary["calendar_lgbm"], 3)
    # Every window the job decided on is a row; the retrain that promoted says so.
    rows = window_rows(config, out)
    assert len(rows) == len(res["driftloop"]["windows"]) >= 8
    assert any(r.event.endswith("promoted") for r in rows)
    assert all(r.metric == "rmse" and r.served is not None for r in rows)


def test_estimate_within_share_counts_windows_within_the_tolerance(backtest):
    config, out, _ = backtest
    share = estimate_within_share(config, out)
    rows = [r for r in window_rows(config, out) if r.estimated is not None]
    assert rows, "the loop's windows carry the label-free estimate"
    within = [abs(r.estimated - r.served) <= 0.2 * r.served for r in rows]
    assert share == round(sum(within) / len(within), 3)
    # Move every estimate far outside 20 % of what was realised: none is within.
    off = copy.deepcopy(out)
    for w in off["results"]["driftloop"]["windows"]:
        if w["estimated"]:
            w["estimated"] = {k: v + 1_000.0 for k, v in w["estimated"].items()}
    assert estimate_within_share(config, off) == 0.0


def test_outputs_are_written(backtest, tmp_path):
    config, out, _ = backtest
    paths = write_outputs(config, out, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["summary"] == summarise(config, out)
    assert paths["dashboard"].exists() and paths["plot"].exists()
    assert "calendar_lgbm" in paths["dashboard"].read_text()


def _cli(capsys, *args):
    code = main(["backtest", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_bad_backtests_are_one_line_and_train_nothing(tmp_path, capsys):
    spec = write_toy(tmp_path / "user", frame=_drifting())
    # A training window with no rows.
    code, err = _cli(
        capsys, "--spec", str(spec), "--train-start", "2019-01-01", "--train-end", "2019-02-01"
    )
    assert code == 1 and len(err) == 1 and "no rows" in err[0], err
    # A replay with no labels.
    frame = _drifting()
    frame.loc[frame.index >= 24 * 45, "y"] = np.nan
    unlabelled = write_toy(tmp_path / "nolabels", frame=frame)
    code, err = _cli(capsys, "--spec", str(unlabelled), "--train-end", "2020-02-15")
    assert code == 1 and len(err) == 1 and "carry no labels" in err[0], err
    # An end before the training end; a replay shorter than one window.
    code, err = _cli(
        capsys, "--spec", str(spec), "--train-end", "2020-02-15", "--end", "2020-01-01"
    )
    assert code == 1 and len(err) == 1 and "must come after" in err[0], err
    code, err = _cli(capsys, "--spec", str(spec), "--train-end", "2020-04-28")
    assert code == 1 and len(err) == 1 and "less than one" in err[0], err
    # A policy naming an unknown signal.
    policy = tmp_path / "policy.yaml"
    policy.write_text("no_such_signal: 1\n")
    code, err = _cli(
        capsys, "--spec", str(spec), "--train-end", "2020-02-15", "--policy", str(policy)
    )
    assert code == 1 and len(err) == 1 and "no_such_signal" in err[0], err
    assert not (tmp_path / "backtest-output").exists()
