"""The predictor emits KServe-logger CloudEvents; a dead collector never breaks serving,
a restarted one gets what was buffered meanwhile, and the buffer is bounded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from driftloop.formats import Lineage, VersionFiles
from driftloop.payloads import BATCH_CONTENT_TYPE, read_logs
from driftloop.registry import Registry
from driftloop.store import LocalStore
from monitoring.collector import Collector
from serving.payload_log import LoggerConfig, PayloadEmitter
from tests.conftest import wait_for
from tests.monitoring.helpers import run
from tests.serving.conftest import Receiver, Trained, rows
from tests.serving.test_server import v2_body


def metric(name: str, model: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model}) or 0.0


def test_dead_collector_is_retried_and_predictions_succeed(
    client: httpx.Client, bike: Trained
) -> None:
    before = metric("driftloop_payload_events_retried_total", "bike-deadlog")
    for _ in range(3):
        r = client.post("/v1/models/bike-deadlog:predict", json={"instances": rows(bike, 2)})
        assert r.status_code == 200, r.text
    assert wait_for(
        lambda: metric("driftloop_payload_events_retried_total", "bike-deadlog") >= before + 6
    )
    exposed = client.get("/metrics").text  # kserve serves prometheus' default registry
    assert 'driftloop_payload_events_retried_total{model="bike-deadlog"}' in exposed
    assert 'driftloop_payload_buffer_bytes{model="bike-deadlog"}' in exposed


def test_the_emitter_retries_through_a_collector_restart() -> None:
    receiver = Receiver()
    config = LoggerConfig(
        url=receiver.url, inference_service="m", timeout_s=0.5, max_backoff_s=0.3, token="tok"
    )
    emitter = PayloadEmitter(config, "restart-model")
    try:
        receiver.close()  # the collector restarts...
        for i in range(20):
            emitter.emit(f"x{i}", b'{"instances": [[1]]}', b'{"predictions": [1]}')
        assert wait_for(lambda: metric("driftloop_payload_events_retried_total", "restart-model"))
        assert emitter.buffered()[0] == 40 and not receiver.posts  # kept, not dropped
        receiver.start()  # ...and is back on the same port
        assert wait_for(lambda: len({e["id"] for e in receiver.events()}) == 20)
        assert all(h["authorization"] == "Bearer tok" for h, _ in receiver.posts)
        assert metric("driftloop_payload_events_sent_total", "restart-model") == 40
        assert metric("driftloop_payload_events_dropped_total", "restart-model") == 0
    finally:
        emitter.close(timeout=1)
        receiver.close()


def test_the_retry_buffer_is_bounded_in_bytes_and_events() -> None:
    dead = Receiver()
    dead.close()
    config = LoggerConfig(
        url=dead.url, inference_service="m", max_buffer_bytes=10_000, max_buffer_events=100
    )
    emitter = PayloadEmitter(config, "bounded-model")
    body = b'{"instances": [[%s]]}' % b",".join([b"1"] * 400)  # ~800 bytes
    for i in range(60):
        emitter.emit(f"b{i}", body, b'{"predictions": [1]}')
        events, size = emitter.buffered()
        assert events <= 100 and size <= 10_000
    dropped = metric("driftloop_payload_events_dropped_total", "bounded-model")
    assert dropped == 120 - emitter.buffered()[0] > 0  # what did not fit is counted
    emitter.close(timeout=0.2)  # the collector never came back: the rest is counted too
    assert metric("driftloop_payload_events_dropped_total", "bounded-model") == 120


def test_events_arrive_paired_with_kserve_attributes(
    client: httpx.Client, bike: Trained, receiver: Receiver
) -> None:
    receiver.posts.clear()
    v1 = {"instances": rows(bike, 2), "timestamp": "2011-02-27T17:00:00+00:00"}
    r1 = client.post("/v1/models/bike-logged:predict", json=v1, headers={"x-request-id": "req-1"})
    r2 = client.post("/v2/models/bike-logged/infer", json=v2_body(bike, rows(bike, 3)))
    assert r1.status_code == r2.status_code == 200

    def events() -> list[dict]:
        return [e for _, batch in list(receiver.posts) for e in batch]  # type: ignore[attr-defined]

    assert wait_for(lambda: len(events()) >= 4)
    assert all(h["content-type"] == BATCH_CONTENT_TYPE for h, _ in receiver.posts)
    by_id: dict[str, dict[str, dict]] = {}
    for e in events():
        assert e["specversion"] == "1.0" and e["datacontenttype"] == "application/json"
        assert e["inferenceservicename"] == "bike-logged" and e["namespace"] == "ns"
        assert e["component"] == "predictor" and e["endpoint"] == "default"
        assert e["source"] and e["time"].endswith("Z")
        by_id.setdefault(e["id"], {})[e["type"].rsplit(".", 1)[1]] = e["data"]
    assert set(by_id["req-1"]) == {"request", "response"}
    assert by_id["req-1"]["request"] == v1  # the request body as sent
    assert by_id["req-1"]["response"] == r1.json()  # the response body as returned
    v2_id = r2.json()["id"]
    served = [{k: v for k, v in o.items() if v is not None} for o in r2.json()["outputs"]]
    assert by_id[v2_id]["response"]["outputs"] == served
    assert [t["name"] for t in by_id[v2_id]["request"]["inputs"]] == bike.spec.features


def test_batches_are_what_the_collector_accepts(
    client: httpx.Client, bike: Trained, receiver: Receiver, tmp_path: Path
) -> None:
    """The emitter's batches go through the real collector into Parquet rows."""
    receiver.posts.clear()
    for i in range(3):
        r = client.post(
            "/v1/models/bike-logged:predict",
            json={"instances": rows(bike, 2)},
            headers={"x-request-id": f"batch-{i}"},
        )
        assert r.status_code == 200
    assert wait_for(lambda: sum(len(b) for _, b in list(receiver.posts)) >= 6)  # type: ignore[arg-type]
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "version"  # the collector logs registered models only
    src.mkdir()
    shutil.copy(bike.dir / VersionFiles.SCHEMA, src / VersionFiles.SCHEMA)
    Registry(store).register("bike-logged", src, Lineage(), "tabular-torch")
    collector = Collector(store, data_dir=tmp_path / "data")
    headers = [(b"content-type", BATCH_CONTENT_TYPE.encode())]
    for _, batch in receiver.posts:
        status, out = run(collector.post_events(headers, json.dumps(batch).encode()))
        assert status == 200 and not json.loads(out)["rejected"], out
    assert run(collector.flush()).rows == 6
    logged = read_logs(store, "bike-logged")
    assert sorted(logged["request_id"].unique()) == ["batch-0", "batch-1", "batch-2"]
    assert logged["prediction"].notna().all()


def test_binary_v2_requests_are_logged_as_json(
    client: httpx.Client, bike: Trained, receiver: Receiver
) -> None:
    """A V2 request in the binary extension is logged like a JSON one: its BYTES tensor
    (length-prefixed raw bytes on the wire) appears in the log as strings."""
    receiver.posts.clear()
    body = v2_body(bike, rows(bike, 2))
    season = next(t for t in body["inputs"] if t["name"] == "season")
    values = [str(v).encode() for v in season.pop("data")]
    raw = b"".join(len(v).to_bytes(4, "little") + v for v in values)  # OIP BYTES layout
    season["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps({**body, "id": "binary-1"}).encode()
    r = client.post(
        "/v2/models/bike-logged/infer",
        content=head + raw,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )
    assert r.status_code == 200, r.text

    def logged() -> list[dict]:
        return [
            e["data"]
            for _, batch in list(receiver.posts)
            for e in batch  # type: ignore[attr-defined]
            if e["id"] == "binary-1" and e["type"].endswith("request")
        ]

    assert wait_for(lambda: len(logged()) == 1)
    tensor = next(t for t in logged()[0]["inputs"] if t["name"] == "season")
    assert tensor["data"] == [v.decode() for v in values]
