"""An image model behind the same predictor: V1 and V2 (JSON, binary tensor, encoded
images), responses with labels, probabilities and top-k, bad input as a 400 naming the
problem, and a payload log that keeps the embedding and statistics, not the pixels."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from driftloop.datakinds.image import IMAGE
from driftloop.decode import Event, decode_pair
from driftloop.families.image_cnn import pixels
from driftloop.formats import parse_schema
from tests.serving.conftest import Receiver, Trained


def _x(digits: Trained, n: int) -> np.ndarray:
    return pixels(digits.test.head(n))


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray((arr[0] * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _offline(digits: Trained, n: int) -> dict:
    from serving.artifacts import load_dir

    return load_dir(digits.dir).model.predict(digits.test.head(n))


def test_v2_metadata_describes_the_tensor(client: httpx.Client) -> None:
    meta = client.get("/v2/models/digits").json()
    assert meta["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]},
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
    ]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]} in meta["outputs"]


def test_v1_nested_lists_and_b64_give_the_offline_prediction(
    client: httpx.Client, digits: Trained
) -> None:
    x, want = _x(digits, 3), _offline(digits, 3)
    for instances in (x.tolist(), x[:, 0].tolist(), [{"b64": _png(a)} for a in x]):
        r = client.post("/v1/models/digits:predict", json={"instances": instances})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["predictions"] == list(want["label"])
        np.testing.assert_allclose(body["probabilities"], want["probability"], atol=1e-4)
        assert len(body["class_probabilities"][0]) == 10 and len(body["top_k"][0]) == 5
        assert body["top_k"][0][0]["label"] == want["label"][0]


def test_v2_json_binary_and_bytes_inputs(client: httpx.Client, digits: Trained) -> None:
    x, want = _x(digits, 2), _offline(digits, 2)
    tensor = {"name": "image", "datatype": "FP32", "shape": [2, 1, 8, 8]}
    r = client.post(
        "/v2/models/digits/infer", json={"inputs": [{**tensor, "data": x.ravel().tolist()}]}
    )
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["prediction"]["data"] == list(want["label"])
    assert outs["top_k_labels"]["shape"] == [2, 5]
    raw = x.astype("<f4").tobytes()
    head = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()
    r = client.post(
        "/v2/models/digits/infer",
        content=head + raw,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )
    assert r.status_code == 200, r.text
    got = r.json()["outputs"] if "outputs" in r.text else None
    assert got is not None and {o["name"]: o for o in got}["prediction"]["data"] == list(
        want["label"]
    )
    data = [_png(a) for a in x]
    r = client.post(
        "/v2/models/digits/infer",
        json={"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2], "data": data}]},
    )
    assert r.status_code == 200, r.text
    assert {o["name"]: o for o in r.json()["outputs"]}["prediction"]["data"] == list(want["label"])


def _big_png() -> str:
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[[0.0] * 8] * 7]}, r"shape \[8, 8\] needs 64 values"),
        ({"instances": [[[[float("nan")] * 8] * 8]]}, None),  # JSON has no NaN: 400 from kserve
        ({"instances": [[[255.0] * 8] * 8]}, r"in \[0, 1\].*scale 0-255 pixels by 1/255"),
        ({"instances": [[["a"] * 8] * 8]}, "data must be numbers"),
        ({"instances": [{"b64": base64.b64encode(b"not a png").decode()}]}, "cannot be decoded"),
        ({"instances": [{"b64": "%%%"}]}, "not base64"),
        ({"instances": [{"b64": _big_png()}]}, "over the limit"),
        (
            {
                "inputs": [
                    {"name": "image", "datatype": "FP32", "shape": [1, 1, 9, 8], "data": [0.0] * 72}
                ]
            },
            r"shape must be \[N, 1, 8, 8\]",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "datatype": "INT64", "shape": [1, 1, 8, 8], "data": [0] * 64}
                ]
            },
            "need datatype FP32",
        ),
        (
            {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0.0]}]},
            "expected one input",
        ),
        (
            {
                "inputs": [
                    {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}
                ]
            },
            "cannot be decoded",
        ),
    ],
)
def test_bad_images_are_a_400_naming_the_problem(
    client: httpx.Client, body: dict, message: str | None
) -> None:
    path = "/v2/models/digits/infer" if "inputs" in body else "/v1/models/digits:predict"
    content = json.dumps(body, allow_nan=True)
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    if message:
        import re

        assert re.search(message, r.text), r.text
    assert client.get("/v2/health/ready").status_code == 200  # still up


def test_inf_in_a_v2_tensor_is_refused(client: httpx.Client) -> None:
    raw = np.full((1, 1, 8, 8), np.inf, "<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, 1, 8, 8],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    r = client.post(
        "/v2/models/digits/infer",
        content=head + raw,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )
    assert r.status_code == 400 and "finite" in r.text


def test_the_log_keeps_embedding_and_statistics_not_pixels(
    client: httpx.Client, digits: Trained, receiver: Receiver
) -> None:
    receiver.posts.clear()
    x = _x(digits, 2)
    r = client.post(
        "/v1/models/digits-logged:predict",
        json={"instances": x.tolist(), "timestamp": "2024-03-01T10:00:00"},
        headers={"x-request-id": "img-1"},
    )
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    events: list[dict] = []
    while time.monotonic() < deadline and len(events) < 2:
        events = [e for _, batch in list(receiver.posts) for e in batch if e["id"] == "img-1"]  # type: ignore[attr-defined]
        time.sleep(0.05)
    req = next(e["data"] for e in events if e["type"].endswith("request"))
    resp = next(e["data"] for e in events if e["type"].endswith("response"))
    schema = parse_schema((digits.dir / "schema.json").read_bytes(), "schema")
    assert list(req["instances"][0]) == schema.names and IMAGE not in req["instances"][0]

    # The collector decodes it as any V1 pair: one numeric column per logged input.
    def ev(body, is_req):
        raw = json.dumps(body).encode()
        return Event(is_req, raw, time.time(), None, "digits-logged", "ns", "default")

    _, rows = decode_pair("img-1", ev(req, True), ev(resp, False), schema.kinds)
    assert len(rows) == 2 and rows[0]["label"] == r.json()["predictions"][0]
    assert all(isinstance(rows[0][n], float) for n in schema.names)
    assert str(rows[0]["event_time"]) == "2024-03-01 10:00:00"
