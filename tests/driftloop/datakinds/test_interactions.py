"""The interactions data kind: MovieLens-100K from the installed recbole wheel, a user's own
CSV/Parquet with a spec, and one clear message for each kind of bad input."""

import subprocess

import pandas as pd
import pytest

from driftloop.data import TIME, load_window
from driftloop.errors import ConfigError, DataError
from driftloop.spec import load_spec, parse_spec
from tests.conftest import ROOT
from tests.interactions import toy_interactions, write_toy_interactions


def test_movielens_is_read_from_the_installed_package_not_the_repository():
    spec = load_spec(ROOT / "data" / "movielens_100k.yaml")
    assert spec.source_uri == "recbole:ml-100k" and spec.local_files == [] and spec.bundled
    df = load_window(spec, None, None)
    assert len(df) == 100_000 and df["user_id"].nunique() == 943 and df["item_id"].nunique() == 1682
    assert df[TIME].min() == pd.Timestamp("1997-09-20 03:05:10")  # Unix seconds
    assert df["user_id"].map(type).eq(str).all() and df["rating"].dtype == "float64"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    assert ".inter" not in tracked and "u.data" not in tracked, "never copy MovieLens in"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_users_own_interactions_with_a_spec(tmp_path, fmt):
    spec = load_spec(write_toy_interactions(tmp_path, fmt=fmt))
    assert spec.target == "item" and spec.task == "ranking"
    df = load_window(spec, None, None)
    assert list(df.columns) == ["user", "item", "stars", TIME]
    assert df["item"].iloc[0] == str(int(toy_interactions()["item"].iloc[0]))  # ints as strings


def test_min_rating_keeps_positive_feedback(tmp_path):
    spec = load_spec(
        write_toy_interactions(
            tmp_path,
            interactions={"user": "user", "item": "item", "rating": "stars", "min_rating": 4},
        )
    )
    assert load_window(spec, None, None)["stars"].min() >= 4


def _bad(tmp_path, frame, fmt="parquet"):
    spec = load_spec(write_toy_interactions(tmp_path, fmt=fmt, frame=frame))
    with pytest.raises(DataError) as e:
        load_window(spec, None, None)
    return str(e.value)


def test_no_timestamp(tmp_path):
    df = toy_interactions()
    assert "interactions need a timestamp" in _bad(tmp_path / "a", df.drop(columns="when"))
    df.loc[3, "when"] = None
    assert "have no timestamp" in _bad(tmp_path / "b", df)


def test_a_single_user(tmp_path):
    df = toy_interactions().assign(user="u0").drop_duplicates(["user", "item"])
    assert "hold 1 user(s)" in _bad(tmp_path, df)


def test_duplicate_rows(tmp_path):
    df = toy_interactions()
    df = pd.concat([df, df.iloc[[5]]], ignore_index=True)
    assert "1 duplicate (user, item, time) row(s)" in _bad(tmp_path, df)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("item", lambda n: [1.5] * n, "holds float64 values"),
        ("user", lambda n: [True, False] * (n // 2), "holds bool values"),
        ("user", lambda n: [["a"]] * n, "ids must be strings or integers"),
        ("item", lambda n: [None] + [1] * (n - 1), "row 0 has no item id"),
    ],
)
def test_ids_that_are_not_strings_or_integers(tmp_path, column, values, message):
    df = toy_interactions()
    df[column] = values(len(df))
    assert message in _bad(tmp_path, df)


def test_spec_errors_are_one_message(tmp_path):
    base = {
        "name": "x",
        "kind": "interactions",
        "source": {"path": "x.csv"},
        "time": {"column": "t"},
        "task": "ranking",
        "metric": "ndcg10",
    }
    for change, message in [
        ({"metric": "rmse"}, "does not fit task ranking"),
        ({"time": {"row_order": {"start": "2024-01-01"}}}, "needs time.column"),
        ({"task": "binary"}, "learns task ranking"),
        ({"target": "other"}, "predicts the item column"),
        ({"kind": "tabular", "numeric": ["a"]}, "an `interactions:` section needs"),
        ({"numeric": ["a"]}, "apply to tabular data"),
    ]:
        raw = {**base, **change}
        if change.get("kind") == "tabular":
            raw["interactions"] = {"user": "u"}
            raw["target"] = "y"
        with pytest.raises(ConfigError, match=message):
            parse_spec(raw, tmp_path)
