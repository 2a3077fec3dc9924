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
from tests.toy import write_toy

# Small, quick parameters per family: the contract is about behaviour, not accuracy.
QUICK = {
    "tabular-torch": {"max_epochs": 15, "patience": 5, "hidden": 64, "layers": 2},
    "tabular-lgbm": {"n_estimators": 200, "objective": "l2"},
    "image-cnn": {"max_epochs": 8, "patience": 4, "filters": 8, "embedding": 16},
}
TASKS = ("regression", "binary", "multiclass")
KINDS = ("tabular", "image")
PREDICTION_KEYS = {
    "regression": {"value"},
    "binary": {"probability", "label"},
    "multiclass": {"probabilities", "probability", "label"},
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
    **{("tabular", t): (lambda d, t=t: write_toy(d, task=t)) for t in TASKS},
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
    metric = {"regression": "r2", "binary": "roc_auc", "multiclass": "accuracy"}[task]
    floor = {"r2": 0.5, "roc_auc": 0.8, "accuracy": 0.5}[metric]
    assert result.validation[metric] > floor
    result.model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(family.files)
    for p in tmp_path.rglob("*"):  # no pickle, in any of its disguises
        assert p.suffix not in {".pkl", ".pickle", ".pt", ".pth", ".joblib"}
        assert not p.read_bytes().startswith(b"\x80")  # the pickle protocol's opcode
    loaded = family.load(tmp_path)
    again = loaded.predict(s.test)
    for key, values in pred.items():
        if values.dtype == object:
            assert (values == again[key]).all()
        else:
            np.testing.assert_allclose(values, again[key], rtol=1e-6)
    assert scores(again, s.test, spec) == scores(pred, s.test, spec)
    schema = loaded.input_schema(spec)
    assert schema.inputs == loaded.inputs and schema.task == task and schema.kind == kind
    # The payload-log hook: the same prediction, and one array per log column (or None:
    # the request is logged as sent, its inputs being the log columns).
    again, logged = loaded.predict_logged(s.test)
    for key, values in pred.items():
        if values.dtype == object:
            assert (values == again[key]).all()
        else:
            np.testing.assert_allclose(values, again[key], rtol=1e-6)
    if logged is None:
        assert schema.names == loaded.inputs
    else:
        assert list(logged) == schema.names
        assert all(len(v) == len(s.test) and np.isfinite(v).all() for v in logged.values())


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
