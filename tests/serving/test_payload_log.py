"""The predictor emits KServe-logger CloudEvents; a dead collector never breaks serving."""

from __future__ import annotations

import json
import time

import httpx
from prometheus_client import REGISTRY

from tests.serving.conftest import Receiver, Trained, rows
from tests.serving.test_server import v2_body


def metric(name: str, model: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model}) or 0.0


def wait_for(cond, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_dead_collector_counts_failures_and_predictions_succeed(
    client: httpx.Client, bike: Trained
) -> None:
    before = metric("driftloop_payload_events_failed_total", "bike-deadlog")
    for _ in range(3):
        r = client.post("/v1/models/bike-deadlog:predict", json={"instances": rows(bike, 2)})
        assert r.status_code == 200, r.text
    assert wait_for(
        lambda: metric("driftloop_payload_events_failed_total", "bike-deadlog") >= before + 6
    )
    exposed = client.get("/metrics").text  # kserve serves prometheus' default registry
    assert 'driftloop_payload_events_failed_total{model="bike-deadlog"}' in exposed


def test_events_arrive_paired_with_kserve_headers(
    client: httpx.Client, bike: Trained, receiver: Receiver
) -> None:
    receiver.events.clear()
    v1 = {"instances": rows(bike, 2), "timestamp": "2011-02-27T17:00:00+00:00"}
    r1 = client.post("/v1/models/bike-logged:predict", json=v1, headers={"x-request-id": "req-1"})
    r2 = client.post("/v2/models/bike-logged/infer", json=v2_body(bike, rows(bike, 3)))
    assert r1.status_code == r2.status_code == 200
    assert wait_for(lambda: len(receiver.events) >= 4)
    by_id: dict[str, dict[str, tuple[dict, dict]]] = {}
    for headers, body in receiver.events:
        assert headers["ce-specversion"] == "1.0"
        assert headers["content-type"] == "application/json"
        assert headers["ce-inferenceservicename"] == "bike-logged"
        assert headers["ce-namespace"] == "ns"
        assert headers["ce-component"] == "predictor" and headers["ce-endpoint"] == "default"
        assert headers["ce-source"] and headers["ce-time"].endswith("Z")
        kind = headers["ce-type"].rsplit(".", 1)[1]
        by_id.setdefault(headers["ce-id"], {})[kind] = (headers, json.loads(body))
    assert set(by_id["req-1"]) == {"request", "response"}
    assert by_id["req-1"]["request"][1] == v1  # the request body as sent
    assert by_id["req-1"]["response"][1] == r1.json()  # the response body as returned
    v2_id = r2.json()["id"]
    served = [{k: v for k, v in o.items() if v is not None} for o in r2.json()["outputs"]]
    assert by_id[v2_id]["response"][1]["outputs"] == served
    assert [t["name"] for t in by_id[v2_id]["request"][1]["inputs"]] == bike.spec.features
