"""The pipeline steps' defaults: which candidates compete when a run names none."""

import pytest

from driftloop.errors import ConfigError
from driftloop.steps import default_trials
from pipelines.run import RunRequest
from tests.toy import write_toy


def test_tabular_runs_pit_lightgbm_against_the_mlp():
    trials = default_trials("tabular", 4)
    assert [t["family"] for t in trials] == ["tabular-lgbm"] * 2 + ["tabular-torch"] * 2
    # An odd count gives the first family the extra trial; one trial is LightGBM's.
    assert [t["family"] for t in default_trials("tabular", 3)].count("tabular-lgbm") == 2
    assert [t["family"] for t in default_trials("tabular", 1)] == ["tabular-lgbm"]
    # Sampled once from each family's declared space: seeds give different trials.
    assert default_trials("tabular", 4, seed=1) != trials


def test_other_kinds_use_the_family_that_learns_them():
    assert {t["family"] for t in default_trials("image", 2)} == {"image-cnn"}
    with pytest.raises(ConfigError, match="no model family of this driftloop learns"):
        default_trials("audio", 2)


def test_a_run_request_without_trials_gets_the_default_candidates(tmp_path):
    from driftloop.spec import load_spec

    spec = load_spec(write_toy(tmp_path))
    args = RunRequest(spec=spec, store_uri=str(tmp_path / "s"), n_trials=2).arguments()
    assert [t["family"] for t in args["trials"]] == ["tabular-lgbm", "tabular-torch"]
