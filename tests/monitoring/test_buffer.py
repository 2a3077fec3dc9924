"""The collector's hot path, pairing, decoding and flushing, in process (no HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftloop.errors import StoreError
from driftloop.payloads import read_logs
from driftloop.store import LocalStore, Store
from monitoring.buffer import CollectorConfig
from monitoring.collector import Collector
from tests.monitoring.helpers import REQ, RESP, as_asgi, headers, register_fake, run, v1_pair


def post(c: Collector, ce_type: str, rid: str, body: object, **h: str) -> tuple[int, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return run(c.post_events(as_asgi(headers(ce_type, rid, **h)), raw))


def flush(c: Collector) -> int:
    return run(c.flush()).rows


@pytest.mark.parametrize("response_first", [False, True])
def test_request_and_response_pair_in_either_order(
    store: Store, response_first: bool, tmp_path: Path
) -> None:
    register_fake(store, tmp_path)
    c = Collector(store, data_dir=tmp_path / "data")
    req, resp = v1_pair("r1", n=2)
    halves = [(REQ, req), (RESP, resp)]
    (t1, b1), (t2, b2) = halves[::-1] if response_first else halves
    assert post(c, t1, "r1", b1) == (200, b"")
    assert not c.pairer.ready  # half a pair is not a row
    assert post(c, t2, "r1", b2) == (200, b"")
    assert flush(c) == 2
    df = read_logs(store, "bike", 1, "default")
    assert df["request_id"].tolist() == ["r1", "r1"] and df["row"].tolist() == [0, 1]
    assert df["temp"].tolist() == [10.0, 11.0] and df["prediction"].tolist() == [100.0, 101.0]
    assert str(df["event_time"][0]) == "2024-05-01 10:00:00"  # from ce-time, naive UTC
    assert (df["inference_service"][0], df["namespace"][0]) == ("bike", "ml")


def test_list_instances_use_the_registry_schema_order(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    c = Collector(store, data_dir=tmp_path / "data")
    req = {"instances": [[12.5, "winter"], [3, 4]], "timestamp": "2024-02-03T04:05:06+01:00"}
    post(c, REQ, "a", req)
    post(c, RESP, "a", {"predictions": [1.0, 2.0], "model_name": "bike", "model_version": "1"})
    assert flush(c) == 2
    df = read_logs(store, "bike")
    assert df["temp"].tolist() == [12.5, 3.0]
    assert df["season"].tolist() == ["winter", "4"]  # categorical per schema: a string
    assert str(df["event_time"][0]) == "2024-02-03 03:05:06"  # the body's timestamp, in UTC


def test_v2_tensors_and_classification_outputs(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    c = Collector(store, data_dir=tmp_path / "data")
    per_feature = {
        "id": "x",
        "inputs": [
            {"name": "temp", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]},
            {"name": "season", "shape": [2], "datatype": "BYTES", "data": ["fall", "spring"]},
        ],
        "parameters": {"timestamp": "2024-03-01T00:00:00Z"},
    }
    one_tensor = {
        "inputs": [
            {"name": "input-0", "shape": [1, 2], "datatype": "BYTES", "data": [[7, "summer"]]}
        ]
    }
    out = {
        "id": "x",
        "model_name": "bike",
        "model_version": "1",
        "outputs": [
            {"name": "prediction", "shape": [2], "datatype": "BYTES", "data": ["yes", "no"]},
            {"name": "probability", "shape": [2], "datatype": "FP64", "data": [0.9, 0.2]},
            {
                "name": "rules_fired",
                "shape": [2],
                "datatype": "BYTES",
                "data": [json.dumps(["cap"]), json.dumps([])],
            },
        ],
    }
    out1 = {
        "model_name": "bike",
        "model_version": "1",
        "outputs": [{"name": "prediction", "shape": [1], "datatype": "FP64", "data": [42.0]}],
    }
    for rid, req, resp in [("p", per_feature, out), ("t", one_tensor, out1)]:
        assert post(c, REQ, rid, req)[0] == 200 and post(c, RESP, rid, resp)[0] == 200
    assert flush(c) == 3
    df = read_logs(store, "bike").set_index(["request_id", "row"])
    assert df.loc[("p", 0), "label"] == "yes" and df.loc[("p", 0), "prediction"] == 0.9
    assert json.loads(df.loc[("p", 0), "rules_fired"]) == ["cap"]
    assert df.loc[("p", 1), "season"] == "spring"
    assert df.loc[("t", 0), "temp"] == 7.0 and df.loc[("t", 0), "prediction"] == 42.0


@pytest.mark.parametrize(
    ("hdr", "body", "error"),
    [
        ({}, b"{not json", "not valid JSON"),
        ({"ce-type": "org.example.other"}, b"{}", "ce-type"),
        ({"ce-id": ""}, b'{"instances": []}', "ce-id"),
        ({}, b"[1, 2]", "JSON object"),
        ({}, b'{"rows": [1]}', "instances"),
        ({"ce-endpoint": "../../etc"}, b'{"instances": []}', "ce-endpoint"),
    ],
)
def test_malformed_events_are_400_and_counted(
    tmp_path: Path, hdr: dict, body: bytes, error: str
) -> None:
    c = Collector(LocalStore(tmp_path / "store"), data_dir=tmp_path / "data")
    status, out = run(c.post_events(as_asgi(headers(REQ, "r", **hdr)), body))
    assert status == 400 and error in json.loads(out)["error"] and b"\n" not in out
    assert c.metrics.rejected.labels("malformed")._value.get() == 1
    assert not c.pairer.pending and c.wal.appended == 0  # nothing of it was kept


def test_unpaired_halves_expire_into_half_records_that_pair_when_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    c = Collector(store, CollectorConfig(unpaired_ttl_s=60), data_dir=tmp_path / "data")
    for rid in "ab":
        post(c, REQ, rid, {"instances": [{"temp": 1.0, "season": "x"}]})
    c.pairer.expire(now=c.pairer.pending[("b", "default")].received + 61)
    assert not c.pairer.pending and c.metrics.unpaired._value.get() == 2
    assert run(c.flush()).halves == 2  # stored unpaired, not dropped
    for rid in "ab":  # the responses come late (or to another replica)
        post(c, RESP, rid, {"predictions": [5.0], "model_name": "bike", "model_version": "1"})
    run(c.stop())
    df = read_logs(store, "bike", 1, "default")
    assert sorted(df["request_id"]) == ["a", "b"] and df["prediction"].tolist() == [5.0, 5.0]
    assert df["temp"].tolist() == [1.0, 1.0]  # decoded with the version's schema


def test_a_shadow_pair_under_the_same_id_pairs_by_endpoint(tmp_path: Path) -> None:
    """A shadow version logs the served request's id again as ``ce-endpoint: shadow``:
    halves pair by (id, endpoint), in memory and when stored unpaired, and the read path
    keeps both rows."""
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    c = Collector(store, CollectorConfig(unpaired_ttl_s=60), data_dir=tmp_path / "data")
    inst = {"instances": [{"temp": 1.0, "season": "x"}]}
    for rid in ("mem", "late"):
        for endpoint in ("default", "shadow"):
            assert post(c, REQ, rid, inst, endpoint=endpoint)[0] == 200
    answers = {"default": 5.0, "shadow": 7.0}
    for endpoint in ("shadow", "default"):  # either order
        body = {"predictions": [answers[endpoint]], "model_name": "bike", "model_version": "1"}
        post(c, RESP, "mem", body, endpoint=endpoint)
    assert len(c.pairer.ready) == 2 and len(c.pairer.pending) == 2
    c.pairer.expire(now=c.pairer.pending[("late", "shadow")].received + 61)
    assert run(c.flush()).halves == 2  # the two "late" requests, stored unpaired
    for endpoint in ("default", "shadow"):
        body = {"predictions": [answers[endpoint]], "model_name": "bike", "model_version": "1"}
        post(c, RESP, "late", body, endpoint=endpoint)
    run(c.stop())
    df = read_logs(store, "bike")
    got = sorted(zip(df["request_id"], df["endpoint"], df["prediction"], strict=True))
    assert got == [
        ("late", "default", 5.0),
        ("late", "shadow", 7.0),
        ("mem", "default", 5.0),
        ("mem", "shadow", 7.0),
    ]


def test_size_trigger(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    c = Collector(store, CollectorConfig(batch_rows=3), data_dir=tmp_path / "data")
    req, resp = v1_pair("x", n=2)
    post(c, REQ, "1", req)
    post(c, RESP, "1", resp)
    assert c.pairer.ready_rows == 2 and not c.pairer.due()  # 2 rows < 3, and young
    post(c, REQ, "2", req)
    post(c, RESP, "2", resp)
    assert c.pairer.due()  # 4 rows: a size flush is due


class FlakyStore(LocalStore):
    """A local store whose writes fail while ``down`` (S3 unreachable)."""

    down = True

    def put(self, key: str, data: bytes) -> None:
        if self.down and key.startswith("logs/"):
            raise StoreError(f"cannot write {key}: connection refused")
        super().put(key, data)


def test_store_outage_keeps_the_batch_retries_and_pushes_back(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    register_fake(store, tmp_path)
    cfg = CollectorConfig(shutdown_retry_s=0, max_buffered_bytes=3_000)
    c = Collector(store, cfg, data_dir=tmp_path / "data")
    for rid in ("a", "b"):
        req, resp = v1_pair(rid)
        assert post(c, REQ, rid, req)[0] == post(c, RESP, rid, resp)[0] == 200
    assert flush(c) == 0  # no crash: the rows wait in memory (and in the log)
    assert c.metrics.flush_errors._value.get() == 1 and c.writer.backlog_rows() == 2
    assert read_logs(store, "bike").empty and c.wal.unreleased() == 4
    status, out = post(c, REQ, "c", v1_pair("c")[0])  # memory bound: refused, not dropped
    assert status == 503 and "retry" in json.loads(out)["error"]
    store.down = False
    assert flush(c) == 2  # the next flush writes the kept batch
    assert len(read_logs(store, "bike")) == 2 and c.writer.backlog_rows() == 0
    assert c.wal.unreleased() == 0
    assert post(c, REQ, "c", v1_pair("c")[0])[0] == 200
