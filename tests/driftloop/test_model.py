"""Preprocessing, the torch model and training: round trips, determinism, no pickle."""

import numpy as np
import pytest
import torch

from driftloop.data import load_window, split_by_time
from driftloop.model import Architecture, InferenceNet, TabularModel, TabularNet
from driftloop.preprocess import Preprocessor
from driftloop.spec import load_spec
from driftloop.train import HParams, baselines, evaluate, sample_trials, train_model
from tests.toy import write_toy

FAST = {"max_epochs": 15, "patience": 5, "hidden": 64, "layers": 2}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    spec = load_spec(write_toy(tmp_path_factory.mktemp("toy")))
    return spec, split_by_time(load_window(spec, None, None), spec)


def test_preprocessor_is_fitted_on_train_only_and_round_trips(toy):
    spec, s = toy
    pre = Preprocessor.fit(s.train, spec)
    assert pre.numeric["a"].mean == pytest.approx(s.train["a"].mean())
    again = Preprocessor.from_json(pre.to_json())
    for x, y in zip(pre.transform(s.test), again.transform(s.test), strict=True):
        np.testing.assert_array_equal(x, y)


def test_json_keeps_column_order(toy):
    # Embeddings are matched to categorical columns by position: sorting keys would
    # silently feed one column's indices to another column's embedding.
    spec, s = toy
    pre = Preprocessor.fit(s.train, spec)
    pre.categories = {"zeta": ["a"], "alpha": ["b", "c"]}
    assert list(Preprocessor.from_json(pre.to_json()).categories) == ["zeta", "alpha"]


def test_unknown_category_maps_to_the_bucket(toy):
    # The "reject" policy is the server's (serving/protocol.py, tests/serving).
    spec, s = toy
    pre = Preprocessor.fit(s.train, spec)
    row = s.test.head(1).assign(colour="purple")
    assert pre.transform(row)[1][0, 0] == 0  # the unknown bucket


def test_training_beats_dumb_baseline_and_is_deterministic(toy):
    spec, s = toy
    r1 = train_model(s, spec, FAST)
    r2 = train_model(s, spec, FAST)
    test_rmse = evaluate(r1.model, s.test, spec)["rmse"]
    assert test_rmse < 0.5 * baselines(s, spec)["dumb"]["rmse"]
    for (k, v1), v2 in zip(
        r1.model.net.state_dict().items(), r2.model.net.state_dict().values(), strict=True
    ):
        assert torch.equal(v1, v2), k


def test_save_load_round_trip_uses_safetensors_and_predicts_identically(toy, tmp_path):
    spec, s = toy
    model = train_model(s, spec, FAST).model
    files = {p.name for p in model.save(tmp_path)}
    assert files == {"model.safetensors", "preprocessor.json", "architecture.json"}
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))
    loaded = TabularModel.load(tmp_path)
    np.testing.assert_array_equal(model.predict(s.test)["value"], loaded.predict(s.test)["value"])


@pytest.mark.parametrize(
    "n_numeric,cardinalities,layers,n_outputs",
    [(4, [3, 25, 2], 3, 1), (0, [5, 7], 1, 3), (6, [], 2, 1)],
)
def test_inference_net_equals_the_trained_network(n_numeric, cardinalities, layers, n_outputs):
    """The folded prediction network computes what TabularNet computes, up to float32
    rounding, for any mix of numeric and categorical columns."""
    torch.manual_seed(0)
    dims = [min(4, c) for c in cardinalities]
    arch = Architecture(n_numeric, cardinalities, dims, 32, layers, 0.5, n_outputs)
    net = TabularNet(arch).eval()
    x_num = torch.randn(200, n_numeric)
    x_cat = (
        torch.stack([torch.randint(0, c, (200,)) for c in cardinalities], dim=1)
        if cardinalities
        else torch.empty(200, 0, dtype=torch.int64)
    )
    with torch.no_grad():
        expected = net(x_num, x_cat)
    folded = InferenceNet(net)(x_num, x_cat)
    assert folded.shape == expected.shape == (200, n_outputs) and not folded.requires_grad
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected, torch.zeros_like(expected))


def test_binary_model_tunes_threshold_and_returns_labels(tmp_path):
    spec = load_spec(write_toy(tmp_path, task="binary"))
    s = split_by_time(load_window(spec, None, None), spec)
    result = train_model(s, spec, FAST)
    pred = result.model.predict(s.test)
    assert set(pred["label"]) <= {"pos", "neg"}
    assert ((pred["probability"] >= result.model.pre.threshold) == (pred["label"] == "pos")).all()
    assert result.val_metrics["roc_auc"] > 0.9


def test_multiclass_model(tmp_path):
    spec = load_spec(write_toy(tmp_path, task="multiclass"))
    s = split_by_time(load_window(spec, None, None), spec)
    result = train_model(s, spec, FAST)
    assert result.model.predict(s.test)["probabilities"].shape == (len(s.test), 3)
    assert result.val_metrics["accuracy"] > 0.7


def test_search_space_sampling_and_params_from_kfp():
    trials = sample_trials(4, seed=1)
    assert len(trials) == 4 and trials[0] == {**HParams(seed=1).__dict__}
    assert len({tuple(sorted(t.items())) for t in trials}) == 4
    # KFP hands dicts over as protobuf Structs: every number arrives as a float.
    hp = HParams.parse({"hidden": 64.0, "layers": 2.0, "lr": 0.01})
    assert hp.hidden == 64 and isinstance(hp.hidden, int) and hp.lr == 0.01
    from driftloop.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        HParams.parse({"hiden": 3})


def test_near_constant_columns_and_far_values_do_not_saturate(toy):
    spec, s = toy
    train = s.train.assign(a=5191.0 + np.arange(len(s.train)) * 1e-13)  # constant up to noise
    pre = Preprocessor.fit(train, spec)
    assert pre.numeric["a"].std == 1.0  # the relative floor, not 1e-13
    far = s.test.head(2).assign(b=[1e9, -1e9])
    x_num, _ = pre.transform(far)
    assert np.abs(x_num).max() <= 10.0
