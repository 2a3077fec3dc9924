"""tabular-torch: determinism, the folded inference network, thresholds, KFP params."""

import pytest
import torch

from driftloop.baselines import baselines
from driftloop.data import load_window, split_by_time
from driftloop.errors import ConfigError
from driftloop.families import get_family
from driftloop.families.tabular_torch import Architecture, InferenceNet, TabularNet
from driftloop.metrics import scores
from driftloop.spec import load_spec
from tests.toy import write_toy

FAST = {"max_epochs": 15, "patience": 5, "hidden": 64, "layers": 2}
FAMILY = get_family("tabular-torch")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    spec = load_spec(write_toy(tmp_path_factory.mktemp("toy")))
    return spec, split_by_time(load_window(spec, None, None), spec)


def test_training_beats_dumb_baseline_and_is_deterministic(toy):
    spec, s = toy
    r1 = FAMILY.train(s, spec, FAST)
    r2 = FAMILY.train(s, spec, FAST)
    test_rmse = scores(r1.model.predict(s.test), s.test, spec)["rmse"]
    assert test_rmse < 0.5 * baselines(s, spec)["dumb"]["rmse"]
    for (k, v1), v2 in zip(
        r1.model.net.state_dict().items(), r2.model.net.state_dict().values(), strict=True
    ):
        assert torch.equal(v1, v2), k


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
    result = FAMILY.train(s, spec, FAST)
    pred = result.model.predict(s.test)
    assert set(pred["label"]) <= {"pos", "neg"}
    assert ((pred["probability"] >= result.model.pre.threshold) == (pred["label"] == "pos")).all()
    assert result.validation["roc_auc"] > 0.9


def test_search_space_sampling_and_params_from_kfp():
    trials = FAMILY.sample_trials(4, seed=1)
    assert len(trials) == 4 and trials[0] == {**FAMILY.default_params(), "seed": 1}
    assert len({tuple(sorted(t.items())) for t in trials}) == 4
    assert [t["seed"] for t in trials] == [1, 2, 3, 4]
    # KFP hands dicts over as protobuf Structs: every number arrives as a float.
    hp = FAMILY.parse_params({"hidden": 64.0, "layers": 2.0, "lr": 0.01})
    assert hp["hidden"] == 64 and isinstance(hp["hidden"], int) and hp["lr"] == 0.01
    with pytest.raises(ConfigError, match="unknown parameter"):
        FAMILY.parse_params({"hiden": 3})
    with pytest.raises(ConfigError, match="hidden=64.5 is not a int"):
        FAMILY.parse_params({"hidden": 64.5})


def test_a_task_the_family_cannot_learn_is_refused(toy):
    spec, s = toy
    with pytest.raises(ConfigError, match="cannot learn"):
        FAMILY.check_task(spec.model_copy(update={"task": "ranking"}))
