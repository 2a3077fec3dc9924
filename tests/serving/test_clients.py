"""A standard Open Inference Protocol client against the server: tritonclient over HTTP
(binary and JSON modes) and gRPC, for a regression and a classification model; every
prediction equals V1's for the same rows."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as thttp

from tests.serving.conftest import Served, Trained, grpc_calls, infer_call, rows

N = 20


def http_inputs(trained: Trained, instances: list[dict], binary: bool) -> list:
    """One column per feature: FP64 numerics, BYTES categoricals."""
    made = []
    for f in trained.spec.features:
        if f in trained.spec.numeric:
            values = np.array([r[f] for r in instances], dtype=np.float64)
            t = thttp.InferInput(f, [len(instances)], "FP64")
        else:
            values = np.array([str(r[f]).encode() for r in instances], dtype=np.object_)
            t = thttp.InferInput(f, [len(instances)], "BYTES")
        t.set_data_from_numpy(values, binary_data=binary)
        made.append(t)
    return made


def v1(client: httpx.Client, model: str, instances: list[dict]) -> dict:
    r = client.post(f"/v1/models/{model}:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    return dict(r.json())


def check_http(trained: Trained, result: thttp.InferResult, expected: dict) -> None:
    prediction = result.as_numpy("prediction")
    assert prediction is not None
    if trained.spec.task == "regression":
        np.testing.assert_array_equal(prediction, expected["predictions"])
    else:
        # BYTES: bytes when sent in binary, str when sent as JSON
        labels = [p.decode() if isinstance(p, bytes) else p for p in prediction]
        assert labels == expected["predictions"]
        np.testing.assert_array_equal(result.as_numpy("probability"), expected["probabilities"])


def check_grpc(trained: Trained, result: dict, expected: dict) -> None:
    assert result["ok"], result
    assert result["raw"]  # raw contents in, raw contents out: what tritonclient reads
    outputs = result["outputs"]
    assert outputs["prediction"] == expected["predictions"]
    if trained.spec.task != "regression":
        assert outputs["probability"] == expected["probabilities"]


@pytest.fixture(params=["bike", "bank"])
def model(request: pytest.FixtureRequest) -> tuple[str, Trained]:
    return request.param, request.getfixturevalue(request.param)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_client_equals_v1(
    server: Served, client: httpx.Client, model: tuple[str, Trained], binary: bool
) -> None:
    name, trained = model
    instances = rows(trained, N)
    expected = v1(client, name, instances)
    with thttp.InferenceServerClient(server.url.removeprefix("http://")) as c:
        assert c.is_server_ready() and c.is_model_ready(name)
        assert c.is_model_ready(name, model_version="1")
        meta = c.get_model_metadata(name)
        assert meta["versions"] == ["1"]
        assert [i["name"] for i in meta["inputs"]] == trained.spec.features
        # JSON mode sends no Content-Type at all; binary mode the binary extension.
        outputs = [thttp.InferRequestedOutput("prediction", binary_data=binary)]
        if trained.spec.task != "regression":
            outputs.append(thttp.InferRequestedOutput("probability", binary_data=binary))
        result = c.infer(name, http_inputs(trained, instances, binary), outputs=outputs)
        check_http(trained, result, expected)
        assert result.get_response()["model_version"] == "1"
        # No outputs named: tritonclient asks for all of them in binary (binary_data_output).
        check_http(trained, c.infer(name, http_inputs(trained, instances, binary)), expected)
        # A gzip-compressed body to a versioned path.
        squeezed = c.infer(
            name,
            http_inputs(trained, instances, binary),
            model_version="1",
            request_compression_algorithm="gzip",
        )
        check_http(trained, squeezed, expected)


def test_grpc_client_equals_v1(
    server: Served, client: httpx.Client, bike: Trained, bank: Trained
) -> None:
    cases = {"bike": bike, "bank": bank}
    calls, expected = [], []
    for name, trained in cases.items():
        instances = rows(trained, N)
        want = v1(client, name, instances)
        calls += [
            {"op": "server_ready"},
            {"op": "ready", "model": name},
            {"op": "ready", "model": name, "version": "1"},
            {"op": "metadata", "model": name},
            infer_call(trained, instances, model=name, id=f"grpc-{name}"),
            infer_call(trained, instances, model=name, version="1"),
            infer_call(trained, instances, model=name, compression="gzip"),
        ]
        expected.append((trained, want))
    results = grpc_calls(server.grpc, calls)
    for i, (trained, want) in enumerate(expected):
        ready, model_ready, versioned, meta, infer, pinned, gzipped = results[7 * i : 7 * i + 7]
        assert ready == {"ok": True, "ready": True, "live": True}
        assert model_ready["ready"] and versioned["ready"]
        assert meta["metadata"]["versions"] == ["1"]
        assert [t["name"] for t in meta["metadata"]["inputs"]] == trained.spec.features
        for result in (infer, pinned, gzipped):
            check_grpc(trained, result, want)
            assert result["model_version"] == "1"
        assert infer["id"] == f"grpc-{'bike' if trained is bike else 'bank'}"


def test_grpc_version_rule(server: Served, bike: Trained) -> None:
    """A version other than the served one is NOT_FOUND, naming the one served."""
    calls = [
        infer_call(bike, rows(bike, 1), version="7"),
        {"op": "ready", "model": "bike", "version": "7"},
        {"op": "metadata", "model": "bike", "version": "7"},
    ]
    for result in grpc_calls(server.grpc, calls):
        assert not result["ok"] and result["status"] == "StatusCode.NOT_FOUND", result
        assert "'7'" in result["message"] and "version 1" in result["message"], result
