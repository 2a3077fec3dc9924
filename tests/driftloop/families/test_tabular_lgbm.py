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


def test_numeric_categories_are_their_numbers_and_others_ordinal_codes():
    # The preprocessor indexes categories as sorted strings ("1", "10", "2"); trees split
    # ranges, so hour 10 must come after hour 2, and an hour the window never saw (23)
    # after 10, not into an unknown bucket.
    import pandas as pd

    from driftloop.families.tabular_lgbm import NUMERIC, matrix
    from driftloop.preprocess import Preprocessor

    codes = ordinal_codes({"hr": ["0", "1", "10", "2"], "colour": ["red", "blue"]})
    assert codes["hr"] == NUMERIC
    assert codes["colour"] == [0, 2, 1]  # index 0 (unknown) stays 0; blue < red
    pre = Preprocessor(
        task="regression",
        numeric={},
        categories={"hr": ["0", "1", "10", "2"], "colour": ["blue", "red"]},
        target="y",
    )
    rows = pd.DataFrame({"hr": ["2", "10", "23", None], "colour": ["red", "blue", "green", "red"]})
    x = matrix(pre, ordinal_codes(pre.categories), rows)
    assert x[:3, 0].tolist() == [2.0, 10.0, 23.0] and np.isnan(x[3, 0])
    assert x[:, 1].tolist() == [2.0, 1.0, 0.0, 2.0]


def test_training_is_deterministic_and_stops_early(toy):
    spec, s = toy
    a = FAMILY.train(s, spec, {"n_estimators": 2000, "early_stopping_rounds": 50})
    b = FAMILY.train(s, spec, {"n_estimators": 2000, "early_stopping_rounds": 50})
    np.testing.assert_array_equal(
        a.model.predict(s.test)["value"], b.model.predict(s.test)["value"]
    )
    assert a.epochs < 2000  # early stopping on validation chose the number of trees


def test_count_objectives_fit_non_negative_targets(tmp_path):
    frame_spec = write_toy(tmp_path, log_target=True)
    spec = load_spec(frame_spec)
    import pandas as pd

    df = load_window(spec, None, None)
    df["y"] = np.round(np.exp(df["y"] / 4))  # non-negative counts
    s = split_by_time(df, spec)
    assert FAMILY.train(s, spec, {}).model.loss == "l2"
    assert FAMILY.train(s, spec, {"objective": "l2_log"}).model.loss == "l2_log"
    model = FAMILY.train(s, spec, {"objective": "poisson"}).model
    assert model.loss == "poisson"
    assert (model.predict(s.test)["value"] > 0).all()
    assert model.predict(pd.DataFrame(s.test.head(3)))["value"].shape == (3,)


def test_recency_weights_halve_with_age(toy):
    spec, s = toy
    weights = FAMILY._weights(s.train, {"half_life_days": 2.0})
    age = (s.train["event_time"].max() - s.train["event_time"]).dt.total_seconds() / 86400
    np.testing.assert_allclose(weights, 0.5 ** (age / 2.0))
    assert FAMILY._weights(s.train, {"half_life_days": 0.0}) is None


def test_a_count_objective_refuses_negative_targets(toy):
    from driftloop.errors import ConfigError

    spec, s = toy  # the toy regression target is centred on zero
    with pytest.raises(ConfigError, match="poisson needs a non-negative target"):
        FAMILY.train(s, spec, {"objective": "poisson"})
