"""What is specific to ``recsys-mf``: determinism, seen items, the popularity fallback,
the refit keeping the selected prior weight, and the precomputed inner product."""

import numpy as np
import pytest

from driftloop.data import load_window, split_by_time
from driftloop.families import get_family
from driftloop.spec import load_spec
from tests.interactions import write_toy_interactions

QUICK = {"max_epochs": 8, "dim": 16}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    spec = load_spec(write_toy_interactions(tmp_path_factory.mktemp("toy")))
    return spec, split_by_time(load_window(spec, None, None), spec)


def test_same_seed_same_model_and_other_seed_other_model(toy):
    spec, s = toy
    family = get_family("recsys-mf")
    a, b = (family.train(s, spec, QUICK).model for _ in range(2))
    np.testing.assert_array_equal(a.t["user_emb"], b.t["user_emb"])
    c = family.train(s, spec, {**QUICK, "seed": 1}).model
    assert not np.array_equal(a.t["user_emb"], c.t["user_emb"])


def test_seen_items_are_excluded_unknown_users_get_the_fallback(toy):
    spec, s = toy
    model = get_family("recsys-mf").train(s, spec, QUICK).model
    user = s.train["user"].iloc[0]
    seen = set(s.train.loc[s.train["user"] == user, "item"])
    pred = model.predict(
        {"user": [user, user, "stranger"], "k": [50, 50, 5], "exclude_seen": [True, False, True]}
    )
    assert not seen & set(pred["items"][0]) and seen & set(pred["items"][1])
    assert list(pred["known"]) == [True, True, False]
    assert (pred["items"][2][5:] == "").all()  # only its k
    popular = pred["items"][2][:5]
    again = model.predict({"user": ["someone else"], "k": [5]})["items"][0]
    assert list(again) == list(popular)  # the same popularity list for every stranger
    listed = pred["items"][0] != ""
    assert (np.diff(pred["scores"][0][listed]) <= 1e-12).all()  # ranked


def test_scores_are_one_inner_product_per_item(toy):
    spec, s = toy
    model = get_family("recsys-mf").train(s, spec, QUICK).model
    r = 3
    mf = model.t["user_emb"][r] @ model.t["item_emb"].T + model.t["item_bias"]
    want = (mf - mf.mean()) / mf.std() + model.cfg.prior_weight * model.t["prior"]
    got = (model._query[r] @ model._rows.T - model.t["user_mean"][r]) / model.t["user_sigma"][r]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_refit_trains_on_the_whole_window_with_the_selected_prior(toy):
    spec, s = toy
    family = get_family("recsys-mf")
    result = family.train(s, spec, QUICK)
    data = load_window(spec, None, None)
    refit = family.refit(result.model, data, spec, result.params, result.epochs)
    assert refit.cfg.prior_weight == result.model.cfg.prior_weight
    assert refit.catalogue == data["item"].nunique() and len(refit.users) == data["user"].nunique()
    assert refit.cfg.trained_until == data["event_time"].max().isoformat()
