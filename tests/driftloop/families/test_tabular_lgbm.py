"""tabular-lgbm: ordinal codes, determinism, the loss it picks, recency weights."""

import numpy as np
import pytest

from driftloop.data import load_window, split_by_time
from driftloop.families import get_family
from driftloop.families.tabular_lgbm import ordinal_codes
from driftloop.spec import load_spec
from tests.toy import write_toy

FAMILY = get_family("tabular-lgbm")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    spec = load_spec(write_toy(tmp_path_factory.mktemp("toy")))
    return spec, split_by_time(load_window(spec, None, None), spec)


def test_numeric_categories_are_coded_in_numeric_order():
    # The preprocessor indexes categories as sorted strings ("1", "10", "2"); trees split
    # ranges, so hour 10 must come after hour 2, not before it.
    codes = ordinal_codes({"hr": ["0", "1", "10", "2"], "colour": ["red", "blue"]})
    assert codes["hr"] == [0, 1, 2, 4, 3]  # index 0 (unknown) stays 0
    assert codes["colour"] == [0, 2, 1]


def test_training_is_deterministic_and_stops_early(toy):
    spec, s = toy
    a = FAMILY.train(s, spec, {"n_estimators": 2000})
    b = FAMILY.train(s, spec, {"n_estimators": 2000})
    np.testing.assert_array_equal(
        a.model.predict(s.test)["value"], b.model.predict(s.test)["value"]
    )
    assert a.epochs < 2000  # early stopping on validation chose the number of trees


def test_a_count_like_target_uses_the_poisson_loss(tmp_path):
    frame_spec = write_toy(tmp_path, log_target=True)
    spec = load_spec(frame_spec)
    import pandas as pd

    df = load_window(spec, None, None)
    df["y"] = np.round(np.exp(df["y"] / 4))  # non-negative counts
    s = split_by_time(df, spec)
    model = FAMILY.train(s, spec, {}).model
    assert model.loss == "poisson"
    assert (model.predict(s.test)["value"] > 0).all()
    assert model.predict(pd.DataFrame(s.test.head(3)))["value"].shape == (3,)


def test_recency_weights_halve_with_age(toy):
    spec, s = toy
    weights = FAMILY._weights(s.train, {"half_life_days": 2.0})
    age = (s.train["event_time"].max() - s.train["event_time"]).dt.total_seconds() / 86400
    np.testing.assert_allclose(weights, 0.5 ** (age / 2.0))
    assert FAMILY._weights(s.train, {"half_life_days": 0.0}) is None
