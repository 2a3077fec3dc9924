"""The pipeline steps' defaults: which candidates compete when a run names none."""

import numpy as np
import pandas as pd
import pytest
import torch

from driftloop.errors import ConfigError, DataError
from driftloop.metrics import scores
from driftloop.registry import Registry, VersionRef
from driftloop.spec import load_spec
from driftloop.steps import (
    WARM_DIR,
    WARM_START,
    default_trials,
    ingest,
    load_trained,
    load_version,
    refit,
    refit_model,
    run_inprocess,
    sample_trials,
    select_best,
    split,
    train_trial,
    trial_record,
)
from driftloop.store import LocalStore
from pipelines.run import RunRequest
from tests.toy import write_toy


def _fresh(trials):
    return [t["family"] for t in trials if not t.get(WARM_START)]


def test_tabular_runs_pit_lightgbm_against_the_mlp_and_a_warm_start():
    trials = default_trials("tabular", 4)
    assert _fresh(trials) == ["tabular-lgbm"] * 2 + ["tabular-torch"] * 2
    # Beside them, the production MLP fine-tuned on the new window.
    assert trials[-1] == {
        "family": "tabular-torch",
        "params": {"seed": 0},
        WARM_START: "production",
    }
    # An odd count gives the first family the extra trial; one trial is LightGBM's.
    assert _fresh(default_trials("tabular", 3)).count("tabular-lgbm") == 2
    assert _fresh(default_trials("tabular", 1)) == ["tabular-lgbm"]
    # Sampled once from each family's declared space: seeds give different trials.
    assert default_trials("tabular", 4, seed=1) != trials


def test_other_kinds_use_the_family_that_learns_them():
    assert default_trials("image", 2) == sample_trials(2, 0, "image-cnn")  # no warm start
    with pytest.raises(ConfigError, match="no model family of this driftloop learns"):
        default_trials("audio", 2)


def test_a_run_request_without_trials_gets_the_default_candidates(tmp_path):
    spec = load_spec(write_toy(tmp_path))
    args = RunRequest(spec=spec, store_uri=str(tmp_path / "s"), n_trials=2).arguments()
    assert _fresh(args["trials"]) == ["tabular-lgbm", "tabular-torch"]
    assert len(args["trials"]) == 3


# -- warm starts and failed trials ---------------------------------------------------------
QUICK = {"max_epochs": 4, "patience": 2, "hidden": 32, "layers": 2, "batch_size": 128}
TORCH = {"family": "tabular-torch", "params": QUICK}
WARM = {"family": "tabular-torch", "params": {**QUICK, "seed": 1}, WARM_START: "production"}
OTHER_SEED = {"family": "tabular-torch", "params": {**QUICK, "hidden": 48, "seed": 1}}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A toy model (torch) in production, and the next window's splits."""
    root = tmp_path_factory.mktemp("warm")
    spec = load_spec(write_toy(root / "user", n=1200))
    store = LocalStore(root / "store")
    champion = {"family": "tabular-torch", "params": {**QUICK, "hidden": 48}}
    ref, _ = run_inprocess(spec, store, "", "2020-01-26", [champion])
    assert ref is not None
    d = root / "next"
    d.mkdir()
    ingest(spec, "2020-01-10", "", d / "data.parquet")
    split(d / "data.parquet", spec, d / "train.parquet", d / "val.parquet", d / "test.parquet")
    return spec, store, d


def test_a_warm_start_fine_tunes_the_production_version(toy_run, tmp_path):
    spec, store, d = toy_run
    rec = train_trial(d / "train.parquet", d / "val.parquet", spec, WARM, tmp_path / "w", store)
    assert rec.error == "" and rec.warm_start == 1
    # It starts from the champion: its architecture (the trial asks for 32 hidden units,
    # the champion has 48), its preprocessor (fit on the champion's window, not this
    # split) and its weights, which a few epochs at a quarter of the rate barely move; a
    # model trained from scratch with another seed lands elsewhere.
    champion = load_version(Registry(store), VersionRef("toy", 1))
    warm = load_trained(tmp_path / "w")
    assert warm.arch == champion.arch and warm.arch.hidden == 48
    assert warm.pre.to_json() == champion.pre.to_json()
    train_trial(d / "train.parquet", d / "val.parquet", spec, OTHER_SEED, tmp_path / "f", store)
    fresh = load_trained(tmp_path / "f")
    assert fresh.pre.to_json() != champion.pre.to_json()

    def weights(m):
        return torch.cat([t.flatten() for t in m.net.state_dict().values()])

    def cosine(a, b):
        return float(torch.nn.functional.cosine_similarity(weights(a), weights(b), dim=0))

    assert cosine(warm, champion) > 0.9 > cosine(fresh, champion) + 0.2
    # Its refit starts from the same weights (kept beside the trained model).
    assert (tmp_path / "w" / WARM_DIR / "model.safetensors").exists()
    out = refit(tmp_path / "w", d / "data.parquet", spec, tmp_path / "r")
    assert out.warm_start == 1 and out.refit_rows == len(pd.read_parquet(d / "data.parquet"))
    refitted = load_trained(tmp_path / "r").predict(pd.read_parquet(d / "test.parquet"))
    assert np.isfinite(refitted["value"]).all()


def test_a_failed_trial_is_recorded_and_the_others_compete(toy_run, tmp_path):
    spec, store, d = toy_run
    args = (d / "train.parquet", d / "val.parquet", spec)
    # No store given, a champion of another family: recorded, not raised.
    nostore = train_trial(*args, WARM, tmp_path / "a")
    assert nostore.error.startswith("ConfigError: a warm-started trial needs the store")
    lgbm = {"family": "tabular-lgbm", "params": {}, WARM_START: "production"}
    other = train_trial(*args, lgbm, tmp_path / "b", store)
    assert "cannot warm-start" in other.error or "not tabular-lgbm" in other.error
    bad = train_trial(*args, {"family": "tabular-torch", "params": {"hidden": -3}}, tmp_path / "c")
    assert bad.error and bad.validation == {}
    good = train_trial(*args, TORCH, tmp_path / "g")
    dirs = [tmp_path / x for x in "abcg"]
    assert select_best(dirs, spec) == tmp_path / "g"
    with pytest.raises(DataError, match="every trial failed to train: tabular-torch: ConfigError"):
        select_best(dirs[:3], spec)
    assert good.error == ""


def test_family_finalists_are_chosen_by_the_test_window(toy_run, tmp_path):
    spec, store, d = toy_run
    args = (d / "train.parquet", d / "val.parquet", spec)
    lgbm = {"family": "tabular-lgbm", "params": {"n_estimators": 60}}
    dirs = [tmp_path / "t", tmp_path / "l"]
    train_trial(*args, TORCH, dirs[0])
    train_trial(*args, lgbm, dirs[1])
    test = pd.read_parquet(d / "test.parquet")
    before = (d / "train.parquet", d / "val.parquet")
    history = pd.concat([pd.read_parquet(p) for p in before], ignore_index=True)
    on_test = {
        x: scores(refit_model(x, history, spec).predict(test), test, spec)["rmse"] for x in dirs
    }
    by_validation = select_best(dirs, spec)
    assert by_validation == min(dirs, key=lambda x: trial_record(x).validation["rmse"])
    # With the test window, the finalist whose refit scores best on it wins.
    assert select_best(dirs, spec, d / "test.parquet", before) == min(dirs, key=on_test.get)
    # Within a family, validation still decides: a worse torch trial is never a finalist.
    worse = {"family": "tabular-torch", "params": {**QUICK, "max_epochs": 1, "lr": 1e-5}}
    train_trial(*args, worse, tmp_path / "w")
    assert select_best([dirs[0], tmp_path / "w"], spec, d / "test.parquet", before) == dirs[0]
