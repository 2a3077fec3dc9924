"""The model-family contract, checked for every family this installation has.

A new family gets these tests for free (docs/model-families.md): it trains on a small
time-ordered toy dataset of each task it declares, saves exactly its declared files in
safe formats, loads back to identical predictions, states an input schema that names its
inputs, and refuses unknown parameters. A family of another data kind (``kinds``) trains on
a toy dataset of that kind (images: ``tests/images.py``). Family-specific behaviour has its
own test module beside this one.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from driftloop.data import load_window, split_by_time
from driftloop.errors import ConfigError
from driftloop.families import family_names, get_family
from driftloop.metrics import scores
from driftloop.spec import load_spec
from tests.images import write_toy_images
from tests.interactions import write_toy_interactions
from tests.toy import write_toy

# Small, quick parameters per family: the contract is about behaviour, not accuracy.
QUICK = {
    "tabular-torch": {"max_epochs": 15, "patience": 5, "hidden": 64, "layers": 2},
    "tabular-lgbm": {"n_estimators": 200, "objective": "l2"},
    "image-cnn": {"max_epochs": 8, "patience": 4, "filters": 8, "embedding": 16},
    "recsys-mf": {"max_epochs": 20, "dim": 32},
}
TASKS = ("regression", "binary", "multiclass", "ranking")
KINDS = ("tabular", "image", "interactions")
PREDICTION_KEYS = {
    "regression": {"value"},
    "binary": {"probability", "label"},
    "multiclass": {"probabilities", "probability", "label"},
    # ranked items [n, k] and their scores, whether the user was known, the catalogue size
    "ranking": {"items", "scores", "known", "catalogue"},
}


def cases():
    for name in family_names():
        family = get_family(name)
        for kind in sorted(family.kinds):
            for task in TASKS:
                if task in family.tasks and (kind, task) in TOYS:
                    yield pytest.param(name, kind, task, id=f"{name}-{task}")


def _image_toy(directory, task):
    if task == "binary":  # two of the three bar angles
        return write_toy_images(
            directory, n=400, classes=2, positive_label="b", task="binary", metric="roc_auc"
        )
    return write_toy_images(directory, n=600)


# A toy dataset per (data kind, task): a spec path writer.
TOYS = {
    **{("tabular", t): (lambda d, t=t: write_toy(d, task=t)) for t in TASKS if t != "ranking"},
    ("interactions", "ranking"): write_toy_interactions,
    ("image", "multiclass"): lambda d: _image_toy(d, "multiclass"),
    ("image", "binary"): lambda d: _image_toy(d, "binary"),
}


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    cache = {}

    def get(kind, task):
        if (kind, task) not in cache:
            spec = load_spec(TOYS[kind, task](tmp_path_factory.mktemp(f"{kind}-{task}")))
            cache[kind, task] = (spec, split_by_time(load_window(spec, None, None), spec))
        return cache[kind, task]

    return get


def test_every_family_is_found_and_named_after_its_module():
    assert "tabular-torch" in family_names()
    for name in family_names():
        family = get_family(name)
        assert family.name == name and family.files and family.tasks


def test_an_unknown_family_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"models/x v3: unknown model family 'gbdt-9'"):
        get_family("gbdt-9", "models/x v3")


def test_every_family_says_which_data_it_learns():
    for name in family_names():
        assert get_family(name).kinds <= set(KINDS)
    assert get_family("image-cnn").kinds == {"image"}
    spec = load_spec(TOYS["tabular", "multiclass"](Path(tempfile.mkdtemp())))
    with pytest.raises(ConfigError, match="image-cnn cannot learn tabular data"):
        get_family("image-cnn").check_task(spec)


@pytest.mark.parametrize(("name", "kind", "task"), list(cases()))
def test_trains_saves_loads_and_predicts_the_same(name, kind, task, toys, tmp_path):
    family = get_family(name)
    spec, s = toys(kind, task)
    result = family.train(s, spec, QUICK.get(name, {}))
    pred = result.model.predict(s.test)
    assert set(pred) == PREDICTION_KEYS[task]
    assert all(len(v) == len(s.test) for v in pred.values())
    # Better than chance on the toy data, measured on the validation split it selected on.
    metric = {"regression": "r2", "binary": "roc_auc", "multiclass": "accuracy"}.get(task, "ndcg10")
    # ndcg10: most-popular scores ~0.25 on the toy interactions (taste groups it cannot see)
    floor = {"r2": 0.5, "roc_auc": 0.8, "accuracy": 0.5, "ndcg10": 0.3}[metric]
    assert result.validation[metric] > floor
    result.model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(family.files)
    for p in tmp_path.rglob("*"):  # no pickle, in any of its disguises
        assert p.suffix not in {".pkl", ".pickle", ".pt", ".pth", ".joblib"}
        assert not p.read_bytes().startswith(b"\x80")  # the pickle protocol's opcode
    loaded = family.load(tmp_path)
    again = loaded.predict(s.test)
    _same(pred, again)
    assert scores(again, s.test, spec) == scores(pred, s.test, spec)
    schema = loaded.input_schema(spec)
    assert schema.inputs == loaded.inputs and schema.task == task and schema.kind == kind
    # The payload-log hook: the same prediction, and one array per log column (or None:
    # the request is logged as sent, its inputs being the log columns).
    again, logged = loaded.predict_logged(s.test)
    _same(pred, again)
    if logged is None:
        assert schema.names == loaded.inputs
    else:
        assert list(logged) == schema.names
        for name, values in logged.items():
            assert len(values) == len(s.test)
            if schema.kinds[name] == "numeric":  # null only where the family logs none
                assert np.isfinite(values).any()
            else:
                assert all(isinstance(v, str) for v in values)


def _same(pred, again):
    for key, values in pred.items():
        if values.dtype.kind in "fc":
            np.testing.assert_allclose(values, again[key], rtol=1e-6)
        else:
            assert (values == again[key]).all()


@pytest.mark.parametrize("name", family_names())
def test_parameters_are_checked_and_trials_start_from_the_defaults(name):
    family = get_family(name)
    with pytest.raises(ConfigError, match="unknown parameter"):
        family.parse_params({"no_such_parameter": 1})
    trials = family.sample_trials(4, seed=1)
    assert len(trials) == 4
    assert {k: v for k, v in trials[0].items() if k != "seed"} == {
        k: v for k, v in family.default_params().items() if k != "seed"
    }
    assert all(set(t) == set(family.default_params()) for t in trials)
