"""Bad input is a 4xx with a JSON error naming the field, never a 5xx; the server stays up."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import Trained, rows
from tests.serving.test_server import v2_body

V1, V2 = "/v1/models/{}:predict", "/v2/models/{}/infer"


def post_json(client: httpx.Client, path: str, body: object) -> httpx.Response:
    """json.dumps, not httpx's json=: it lets NaN and Infinity through, as clients may."""
    return client.post(
        path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


def post_v1(client: httpx.Client, instances: object, model: str = "bike") -> httpx.Response:
    return client.post(V1.format(model), json={"instances": instances})


def test_v1_field_errors_name_the_field(client: httpx.Client, bike: Trained) -> None:
    good = rows(bike, 1)[0]
    missing = {k: v for k, v in good.items() if k != "hr"}
    cases = {
        "missing": ([missing], "'hr'"),
        "unknown": ([{**good, "colour": "red"}], "'colour'"),
        "string for numeric": ([{**good, "temp": "warm"}], "'temp'"),
        "bool for numeric": ([{**good, "hum": True}], "'hum'"),
        "list for categorical": ([{**good, "season": [1]}], "'season'"),
        "short list": ([[1.0, 2.0]], "schema order"),
        "empty": ([], "no rows"),
        "scalar instance": ([3], "instance 0"),
    }
    for name, (instances, needle) in cases.items():
        r = post_v1(client, instances)
        assert r.status_code == 400, (name, r.text)
        assert needle in r.json()["error"], (name, r.json())


def test_nan_and_inf_are_rejected(client: httpx.Client, bike: Trained) -> None:
    good = rows(bike, 1)[0]
    # orjson refuses NaN literals in V1 bodies; the V2 body parser accepts them, we refuse.
    r = client.post(
        V1.format("bike"),
        content=b'{"instances": [{"temp": NaN}]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    for bad in (float("inf"), float("nan"), 1e400):
        body = v2_body(bike, [good])
        body["inputs"][0]["data"] = [bad]
        r = post_json(client, V2.format("bike"), body)
        assert r.status_code == 400 and "'temp'" in r.json()["error"], r.text


def test_unknown_category_reject_policy(client: httpx.Client, bank: Trained) -> None:
    r = post_v1(client, [{**rows(bank, 1)[0], "job": "astronaut"}], model="bank")
    assert r.status_code == 400
    assert "'job'" in r.json()["error"] and "astronaut" in r.json()["error"]


def test_row_limit(client: httpx.Client, bank: Trained) -> None:
    inst = rows(bank, 1) * 51  # the bank predictor is configured with max_batch_rows=50
    assert post_v1(client, inst[:50], model="bank").status_code == 200
    r = post_v1(client, inst, model="bank")
    assert r.status_code == 400 and "too many rows" in r.json()["error"]
    r = client.post(V2.format("bank"), json=v2_body(bank, inst))
    assert r.status_code == 400 and "too many rows" in r.json()["error"]


@pytest.mark.parametrize(
    "content,ctype",
    [
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"instances"', "application/json"),
        (b"null", "application/json"),
        (b'{"instances": [{}]}', "text/plain"),
        (b"\xff\xfe", "application/octet-stream"),
        (b"", "application/json"),
    ],
)
def test_malformed_bodies(client: httpx.Client, content: bytes, ctype: str) -> None:
    for path in (V1.format("bike"), V2.format("bike")):
        r = client.post(path, content=content, headers={"content-type": ctype})
        assert 400 <= r.status_code < 500, (path, content, r.status_code, r.text)


def test_v2_tensor_errors(client: httpx.Client, bike: Trained) -> None:
    good = v2_body(bike, rows(bike, 2))

    def with_first(**change: object) -> dict:
        inputs = [dict(t) for t in good["inputs"]]
        inputs[0].update(change)
        return {"inputs": inputs}

    cases = {
        "numeric as BYTES": (with_first(datatype="BYTES"), "'temp'"),
        "bad shape": (with_first(shape=[2, 2]), "'temp'"),
        "short data": (with_first(data=[0.5]), "'temp'"),
        "missing input": ({"inputs": good["inputs"][1:]}, "'temp'"),
        "timestamp": ({**good, "parameters": {"timestamp": "yesterday"}}, "timestamp"),
    }
    for name, (body, needle) in cases.items():
        r = client.post(V2.format("bike"), json=body)
        assert r.status_code == 400, (name, r.text)
        assert needle in r.json()["error"], (name, r.json())


# -- property-based: garbage never yields a 5xx --------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["1", "17", "3", "yes", "temp", "hr"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["temp", "hr", "hum", "x", "instances", "data"]), children, max_size=4
        )
    ),
    max_leaves=12,
)


@st.composite
def v1_bodies(draw: st.DrawFn) -> object:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(json_values)
    if kind == 1:
        return {"instances": draw(json_values)}
    if kind == 2:
        return {"instances": draw(st.lists(json_values, max_size=3))}
    return {
        "instances": draw(
            st.lists(
                st.dictionaries(st.sampled_from(FEATURES + ["bogus"]), json_values, max_size=14),
                min_size=1,
                max_size=3,
            )
        ),
        **({"timestamp": draw(json_values)} if draw(st.booleans()) else {}),
    }


FEATURES = [
    "temp",
    "atemp",
    "hum",
    "windspeed",
    "season",
    "yr",
    "mnth",
    "hr",
    "holiday",
    "weekday",
    "workingday",
    "weathersit",
]


@st.composite
def v2_bodies(draw: st.DrawFn) -> object:
    tensors = st.fixed_dictionaries(
        {
            "name": st.sampled_from(FEATURES + ["bogus"]),
            "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "FP16", "X"]),
            "shape": st.lists(st.integers(-2, 3), max_size=3),
            "data": st.lists(json_values, max_size=3),
        }
    )
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(json_values)
    if kind == 1:
        return {"inputs": draw(json_values)}
    return {
        "inputs": draw(st.lists(tensors, max_size=13)),
        **({"parameters": {"timestamp": draw(st.text(max_size=5))}} if draw(st.booleans()) else {}),
    }


BOUNDED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@BOUNDED
@given(body=v1_bodies())
def test_v1_garbage_never_5xx(client: httpx.Client, bike: Trained, body: object) -> None:
    r = post_json(client, V1.format("bike"), body)
    assert r.status_code < 500, (body, r.text)


@BOUNDED
@given(body=v2_bodies())
def test_v2_garbage_never_5xx(client: httpx.Client, bike: Trained, body: object) -> None:
    r = post_json(client, V2.format("bike"), body)
    assert r.status_code < 500, (body, r.text)


def binary_v2(header: dict, tail: bytes, length: str | None = None) -> tuple[bytes, dict]:
    """A body in the V2 binary tensor extension: JSON header, then raw tensor bytes."""
    head = json.dumps(header).encode()
    hdr = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)) if length is None else length,
    }
    return head + tail, hdr


def test_v2_binary_extension_is_decoded(client: httpx.Client, bike: Trained) -> None:
    """A tensor sent as raw little-endian bytes predicts what the same JSON tensor does."""
    instances = rows(bike, 2)
    body = v2_body(bike, instances)
    temp = next(t for t in body["inputs"] if t["name"] == "temp")
    raw = np.asarray(temp.pop("data"), dtype="<f8").tobytes()
    temp["parameters"] = {"binary_data_size": len(raw)}
    content, headers = binary_v2(body, raw)
    r = client.post(V2.format("bike"), content=content, headers=headers)
    assert r.status_code == 200, r.text
    plain = client.post(V2.format("bike"), json=v2_body(bike, instances)).json()
    assert r.json()["outputs"][0]["data"] == plain["outputs"][0]["data"]


@BOUNDED
@given(
    length=st.one_of(
        st.integers(-5, 2000).map(str),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4),
    ),
    tail=st.binary(max_size=12),
    size=st.integers(-1, 16),
    datatype=st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "FP16"]),
)
def test_v2_binary_garbage_never_5xx(
    client: httpx.Client, bike: Trained, length: str, tail: bytes, size: int, datatype: str
) -> None:
    """kserve decodes this extension before our code runs; bad headers and short or
    ragged tensor bytes must still be a 4xx."""
    body = v2_body(bike, rows(bike, 1))
    temp = next(t for t in body["inputs"] if t["name"] == "temp")
    del temp["data"]
    temp["datatype"], temp["parameters"] = datatype, {"binary_data_size": size}
    content, headers = binary_v2(body, tail, length if length.strip() else None)
    r = client.post(V2.format("bike"), content=content, headers=headers)
    assert r.status_code < 500, (length, tail, size, datatype, r.text)


def test_server_still_answers_after_garbage(client: httpx.Client, bike: Trained) -> None:
    # Runs after the property tests in file order; also sends one more piece of garbage.
    assert client.post(V1.format("bike"), content=b"\x00").status_code < 500
    r = post_v1(client, rows(bike, 3))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3
    r = client.post(V2.format("bike"), json=v2_body(bike, rows(bike, 3)))
    assert r.status_code == 200
