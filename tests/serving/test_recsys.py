"""A recommender behind the same predictor: V1 and V2 top-k for a user, the popularity
fallback for an unknown user (and the response says so), V2 metadata, bad input as a 400,
and a payload log that keeps the user and the ranked items, which the collector decodes as
any V1 pair and the drift job joins with feedback labels by request id."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from driftloop.decode import Event, decode_pair
from driftloop.formats import parse_schema
from tests.serving.conftest import Receiver, Trained


def _offline(recsys: Trained, users: list[str], k: int = 10) -> dict:
    from serving.artifacts import load_dir

    return load_dir(recsys.dir).model.predict({"user": users, "k": [k] * len(users)})


def _known(recsys: Trained) -> str:
    return str(recsys.test["user"].iloc[0])


def test_v2_metadata_describes_inputs_and_outputs(client: httpx.Client) -> None:
    meta = client.get("/v2/models/toy-recsys").json()
    assert [i["name"] for i in meta["inputs"]] == ["user_id", "k", "exclude_seen"]
    assert {"name": "items", "datatype": "BYTES", "shape": [-1, -1]} in meta["outputs"]
    assert {"name": "fallback", "datatype": "BOOL", "shape": [-1]} in meta["outputs"]


def test_v1_top_k_for_a_known_and_an_unknown_user(client: httpx.Client, recsys: Trained) -> None:
    user = _known(recsys)
    r = client.post(
        "/v1/models/toy-recsys:predict",
        json={"instances": [{"user_id": user, "k": 5, "exclude_seen": True}, {"user_id": 12345}]},
    )
    assert r.status_code == 200, r.text
    known, stranger = r.json()["predictions"]
    want = _offline(recsys, [user], 5)
    assert known["items"] == list(want["items"][0]) and known["fallback"] is False
    assert len(known["scores"]) == 5 and known["scores"] == sorted(known["scores"], reverse=True)
    assert stranger["fallback"] is True and len(stranger["items"]) == 10


def test_v2_gives_the_same_lists(client: httpx.Client, recsys: Trained) -> None:
    user = _known(recsys)
    body = {
        "inputs": [
            {"name": "user_id", "datatype": "BYTES", "shape": [2], "data": [user, "nobody"]},
            {"name": "k", "datatype": "INT32", "shape": [1], "data": [3]},
        ]
    }
    r = client.post("/v2/models/toy-recsys/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["items"]["shape"] == [2, 3] and out["fallback"]["data"] == [False, True]
    assert out["items"]["data"][:3] == list(_offline(recsys, [user], 3)["items"][0])
    assert out["prediction"]["data"][0] == out["items"]["data"][0]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("v1", {"instances": [{"user_id": 1.5}]}, "user_id must be a string or an integer"),
        ("v1", {"instances": [{"user_id": None}]}, "user_id must be a string or an integer"),
        ("v1", {"instances": [{"user_id": True}]}, "user_id must be a string or an integer"),
        ("v1", {"instances": [{"user_id": "u1", "k": 0}]}, "k must be in 1.."),
        ("v1", {"instances": [{"user_id": "u1", "k": 10_000}]}, "k must be in 1.."),
        ("v1", {"instances": [{"user_id": "u1", "k": 2.5}]}, "k must be an integer"),
        ("v1", {"instances": [{"user_id": "u1", "exclude_seen": "yes"}]}, "exclude_seen"),
        ("v1", {"instances": [{"user": "u1"}]}, "unknown field 'user'"),
        ("v1", {"instances": "u1"}, "expected a list"),
        ("v1", {"instances": []}, "no rows"),
        ("v1", {"instances": [{"user_id": "u"}] * 51}, "too many rows"),
        (
            "v2",
            {"inputs": [{"name": "user", "datatype": "BYTES", "shape": [1], "data": ["u"]}]},
            "unknown input 'user'",
        ),
        (
            "v2",
            {"inputs": [{"name": "user_id", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
            "BYTES or INT64",
        ),
        (
            "v2",
            {
                "inputs": [
                    {"name": "user_id", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
                    {"name": "k", "datatype": "INT32", "shape": [2], "data": [3, 4]},
                ]
            },
            "one k per V2 request",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client, path, body, message) -> None:
    url = "/v1/models/toy-recsys:predict" if path == "v1" else "/v2/models/toy-recsys/infer"
    r = client.post(url, json=body)
    assert r.status_code == 400, r.text
    assert message in r.text


def test_a_malformed_body_is_a_400(client: httpx.Client) -> None:
    r = client.post(
        "/v1/models/toy-recsys:predict",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert 400 <= r.status_code < 500


def test_the_log_keeps_the_user_and_the_ranked_items(
    client: httpx.Client, recsys: Trained, receiver: Receiver
) -> None:
    user = _known(recsys)
    r = client.post(
        "/v1/models/toy-recsys-logged:predict",
        json={
            "instances": [{"user_id": user}, {"user_id": "nobody"}],
            "timestamp": "2024-03-01T10:00:00",
        },
        headers={"x-request-id": "rec-1"},
    )
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    events: list[dict] = []
    while time.monotonic() < deadline and len(events) < 2:
        events = [e for _, batch in list(receiver.posts) for e in batch if e["id"] == "rec-1"]  # type: ignore[attr-defined]
        time.sleep(0.05)
    req = next(e["data"] for e in events if e["type"].endswith("request"))
    resp = next(e["data"] for e in events if e["type"].endswith("response"))
    schema = parse_schema((recsys.dir / "schema.json").read_bytes(), "schema")

    def ev(body, is_req):
        raw = json.dumps(body).encode()
        return Event(is_req, raw, time.time(), None, "toy-recsys-logged", "ns", "default")

    _, rows = decode_pair("rec-1", ev(req, True), ev(resp, False), schema.kinds)
    served = r.json()["predictions"]
    assert [json.loads(row["items"]) for row in rows] == [p["items"] for p in served]
    assert rows[0]["user_id"] == user and rows[1]["user_activity"] == "new"
    assert rows[0]["score"] == pytest.approx(served[0]["scores"][0]) and rows[1]["score"] is None
