"""Tabular preprocessing: fitted on train only, JSON round trips, bounded outputs."""

import numpy as np
import pytest

from driftloop.data import load_window, split_by_time
from driftloop.preprocess import Preprocessor
from driftloop.spec import load_spec
from tests.toy import write_toy


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


def test_near_constant_columns_and_far_values_do_not_saturate(toy):
    spec, s = toy
    train = s.train.assign(a=5191.0 + np.arange(len(s.train)) * 1e-13)  # constant up to noise
    pre = Preprocessor.fit(train, spec)
    assert pre.numeric["a"].std == 1.0  # the relative floor, not 1e-13
    far = s.test.head(2).assign(b=[1e9, -1e9])
    x_num, _ = pre.transform(far)
    assert np.abs(x_num).max() <= 10.0
