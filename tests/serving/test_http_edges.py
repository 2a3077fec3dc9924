"""V2 over HTTP where standards are lenient, and versioned paths: bodies without a JSON
content type, gzip and deflate bodies (bounded once decompressed), binary_data_output,
requested outputs, /versions/<v>/..."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import numpy as np
from kserve.protocol.infer_type import InferResponse

from serving.rest import MAX_BODY_BYTES
from tests.serving.conftest import Trained, rows
from tests.serving.test_server import v2_body

V1, V2 = "/v1/models/bike:predict", "/v2/models/bike/infer"


def prediction(r: httpx.Response) -> list:
    assert r.status_code == 200, r.text
    body = r.json()
    return list(body["predictions"] if "predictions" in body else body["outputs"][0]["data"])


def test_json_without_a_json_content_type(client: httpx.Client, bike: Trained) -> None:
    """curl -d sends form encoding; some clients send no content type: both are JSON."""
    inst = rows(bike, 3)
    want = prediction(client.post(V1, json={"instances": inst}))
    for path, body in ((V1, {"instances": inst}), (V2, v2_body(bike, inst))):
        content = json.dumps(body).encode()
        for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}):
            r = client.post(path, content=content, headers=headers)  # no content-type by default
            assert "content-type" not in r.request.headers or headers
            assert prediction(r) == want, (path, headers)
    r = client.post(V2, content=b"not json", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "malformed V2 request" in r.json()["error"]


def test_compressed_bodies(client: httpx.Client, bike: Trained) -> None:
    inst = rows(bike, 3)
    want = prediction(client.post(V1, json={"instances": inst}))
    for path, body in ((V1, {"instances": inst}), (V2, v2_body(bike, inst))):
        raw = json.dumps(body).encode()
        for encoding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
            r = client.post(
                path,
                content=packed,
                headers={"content-type": "application/json", "content-encoding": encoding},
            )
            assert prediction(r) == want, (path, encoding)


def test_compressed_bodies_are_bounded(client: httpx.Client, bike: Trained) -> None:
    """A zip bomb is a 413 (never decompressed past the limit); corrupt data a 400; an
    unknown encoding a 415; a body over the limit a 413. The server keeps answering."""
    bomb = gzip.compress(b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}", compresslevel=9)
    assert len(bomb) < 100_000
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    r = client.post(V2, content=bomb, headers=headers)
    assert r.status_code == 413 and str(MAX_BODY_BYTES) in r.json()["error"]
    good = gzip.compress(json.dumps({"instances": rows(bike, 1)}).encode())
    for content in (b"not gzip at all", good[:-12]):
        r = client.post(V1, content=content, headers=headers)
        assert r.status_code == 400 and "cannot be decompressed" in r.json()["error"], r.text
    r = client.post(V1, content=good, headers={**headers, "content-encoding": "br"})
    assert r.status_code == 415 and "'br'" in r.json()["error"]
    r = client.post(V2, content=b" " * (MAX_BODY_BYTES + 1), headers={"content-type": "text/plain"})
    assert r.status_code == 413
    assert prediction(client.post(V1, content=good, headers=headers))


def test_binary_data_output(client: httpx.Client, bike: Trained, bank: Trained) -> None:
    """binary_data_output: true returns every output in the binary extension; an output's
    own binary_data overrides it."""
    for name, trained in (("bike", bike), ("bank", bank)):
        inst = rows(trained, 4)
        plain = client.post(f"/v2/models/{name}/infer", json=v2_body(trained, inst)).json()
        body = {**v2_body(trained, inst), "parameters": {"binary_data_output": True}}
        r = client.post(f"/v2/models/{name}/infer", json=body)
        assert r.status_code == 200, r.text
        length = int(r.headers["inference-header-content-length"])
        decoded = InferResponse.from_bytes(r.content, length)
        head = json.loads(r.content[:length])
        assert all("data" not in o for o in head["outputs"])
        for o in plain["outputs"]:
            got = decoded.get_output_by_name(o["name"]).data
            assert got == o["data"], (name, o["name"])
        # one output as JSON, in the order asked for
        mixed = {
            **body,
            "outputs": [
                {"name": "prediction", "parameters": {"binary_data": False}},
            ],
        }
        r = client.post(f"/v2/models/{name}/infer", json=mixed)
        assert (
            r.status_code == 200 and r.json()["outputs"][0]["data"] == plain["outputs"][0]["data"]
        )


def test_requested_outputs(client: httpx.Client, bank: Trained) -> None:
    body = v2_body(bank, rows(bank, 2))
    r = client.post("/v2/models/bank/infer", json={**body, "outputs": [{"name": "probability"}]})
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["probability"]
    r = client.post("/v2/models/bank/infer", json={**body, "outputs": [{"name": "score"}]})
    assert r.status_code == 400 and "'score'" in r.json()["error"]
    assert "probability" in r.json()["error"]


def test_versioned_paths(client: httpx.Client, bike: Trained) -> None:
    """The served version answers on every versioned path; any other is a 404 naming it."""
    meta = client.get("/v2/models/bike")
    assert meta.json()["versions"] == ["1"]
    assert client.get("/v2/models/bike/versions/1").json() == meta.json()
    r = client.get("/v2/models/bike/versions/1/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    body = v2_body(bike, rows(bike, 2))
    r = client.post("/v2/models/bike/versions/1/infer", json=body)
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    np.testing.assert_array_equal(
        r.json()["outputs"][0]["data"], client.post(V2, json=body).json()["outputs"][0]["data"]
    )
    for path in ("", "/ready"):
        r = client.get(f"/v2/models/bike/versions/7{path}")
        assert r.status_code == 404 and "version 1" in r.json()["error"], r.text
    r = client.post("/v2/models/bike/versions/7/infer", json=body)
    assert r.status_code == 404 and "'7'" in r.json()["error"] and "version 1" in r.json()["error"]
    r = client.get("/v2/models/nope/versions/1")
    assert r.status_code == 404
