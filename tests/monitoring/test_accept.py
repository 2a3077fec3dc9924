"""What the collector accepts, in process: every bad value is a 4xx naming it, alone;
registered models only; the token; the byte bounds; the same verdicts as the predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kserve.errors import InvalidInput
from pydantic import SecretStr

from driftloop.payloads import read_logs
from driftloop.store import LocalStore
from monitoring.buffer import CollectorConfig
from monitoring.collector import Collector
from serving.protocol import decode_v1
from tests.monitoring.helpers import (
    REQ,
    RESP,
    SCHEMA,
    as_asgi,
    headers,
    register_fake,
    run,
    structured,
    v1_pair,
)

BATCH = [(b"content-type", b"application/cloudevents-batch+json")]


@pytest.fixture
def c(tmp_path: Path) -> Collector:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    return Collector(store, data_dir=tmp_path / "data")


def post(c: Collector, ce_type: str, rid: str, body: object, **h: str) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, out = run(c.post_events(as_asgi(headers(ce_type, rid, **h)), raw))
    return status, json.loads(out) if out else {}


def batch(c: Collector, events: list, auth: bytes | None = None) -> tuple[int, dict]:
    h = BATCH + ([(b"authorization", auth)] if auth else [])
    status, out = run(c.post_events(h, json.dumps(events).encode()))
    return status, json.loads(out)


def good_pair(c: Collector, rid: str) -> None:
    req, resp = v1_pair(rid)
    assert post(c, REQ, rid, req)[0] == post(c, RESP, rid, resp)[0] == 200


REQUEST_BODY = {"instances": [{"temp": 1.0, "season": "x"}]}
RESPONSE_BODY = {"predictions": [1.0], "model_name": "bike", "model_version": "1"}
BAD = [
    # (ce-type, extra headers, body, status, the name the error must carry)
    (RESP, {}, {**RESPONSE_BODY, "model_version": "99999999999999999999"}, 400, "model_version"),
    (RESP, {}, {**RESPONSE_BODY, "model_version": "0"}, 400, "model_version"),
    (RESP, {}, {**RESPONSE_BODY, "model_version": "v1"}, 400, "model_version"),
    (RESP, {}, {k: v for k, v in RESPONSE_BODY.items() if k != "model_version"}, 400, "version"),
    (RESP, {}, {**RESPONSE_BODY, "model_version": "7"}, 422, "version 7"),
    (RESP, {}, {**RESPONSE_BODY, "model_name": "nobody"}, 422, "'nobody'"),
    (RESP, {}, {**RESPONSE_BODY, "probabilities": ["high"]}, 400, "probabilities[0]"),
    (RESP, {}, b'{"predictions": [1e400], "model_version": "1"}', 400, "JSON"),
    (REQ, {}, {**REQUEST_BODY, "timestamp": "0001-01-01T00:00:00+01:00"}, 400, "timestamp"),
    (REQ, {}, {**REQUEST_BODY, "timestamp": "9999-12-31T23:00:00-05:00"}, 400, "timestamp"),
    (REQ, {}, {**REQUEST_BODY, "timestamp": None}, 400, "timestamp"),
    (REQ, {"ce-time": "0001-01-01T00:00:00+01:00"}, REQUEST_BODY, 400, "ce-time"),
    (REQ, {}, {"instances": [{"temp": True}]}, 400, "instances[0].temp"),
    (REQ, {}, {"instances": [{"temp": [1, 2]}]}, 400, "instances[0].temp"),
    (REQ, {}, b'{"instances": [{"temp": 1e999}]}', 400, "JSON"),
    (REQ, {}, {"inputs": [{"name": "temp", "shape": [3], "data": [1.0]}]}, 400, "shape"),
    (REQ, {}, {"inputs": [{"name": "temp", "shape": [2**70], "data": []}]}, 400, "shape"),
    (REQ, {"ce-endpoint": "blue"}, REQUEST_BODY, 400, "ce-endpoint"),
    (REQ, {"ce-inferenceservicename": "nobody"}, REQUEST_BODY, 422, "'nobody'"),
    (REQ, {"ce-id": "x" * 300}, REQUEST_BODY, 400, "ce-id"),
]


@pytest.mark.parametrize(("ce_type", "hdr", "body", "status", "name"), BAD)
def test_a_bad_event_is_a_4xx_naming_it_and_the_collector_keeps_serving(
    c: Collector, ce_type: str, hdr: dict, body: object, status: int, name: str
) -> None:
    got, out = post(c, ce_type, "bad", body, **hdr)
    assert got == status and name in out["error"], out
    assert c.metrics.invalid._value.get() == 1 and c.wal.appended == 0
    good_pair(c, "good")  # the next events are served as ever
    assert run(c.flush()).rows == 1


def test_one_bad_event_in_a_batch_is_refused_alone(c: Collector, tmp_path: Path) -> None:
    events = []
    for i in range(100):
        req, resp = v1_pair(f"g{i}", n=2)
        events += [structured(REQ, f"g{i}", req), structured(RESP, f"g{i}", resp)]
    poison = {**RESPONSE_BODY, "model_version": "99999999999999999999"}
    events.insert(57, structured(RESP, "poison", poison))
    events.append(structured(REQ, "short", {"instances": [{"temp": 1.0, "season": "x"}] * 2}))
    events.append(structured(RESP, "short", RESPONSE_BODY))  # 2 instances, 1 prediction
    status, out = batch(c, events)
    assert status == 200 and out["accepted"] == 200
    errors = {r["index"]: r["error"] for r in out["rejected"]}
    assert set(errors) == {57, 201, 202} and "model_version" in errors[57]
    assert errors[201].startswith("event 201: the pair does not decode: 2 instances but 1")
    assert errors[202].startswith("event 202: the pair does not decode")  # both halves
    assert run(c.flush()).rows == 200  # every good row: nothing poisoned the flush
    assert len(read_logs(c.store, "bike")) == 200


def test_labels_for_registered_models_within_the_skew(c: Collector) -> None:
    def labels(model: str, *items: dict) -> tuple[int, dict]:
        body = json.dumps({"model": model, "labels": list(items)}).encode()
        status, out = run(c.post_labels([], body))
        return status, json.loads(out)

    assert labels("bike", {"request_id": "a", "label": 1.0})[0] == 200
    status, out = labels("nobody", {"request_id": "a", "label": 1.0})
    assert status == 422 and "'nobody'" in out["error"]
    cases = [
        ({"request_id": "a", "label": 1, "time": "9999-12-31T00:00:00Z"}, "labels[0].time"),
        ({"request_id": "a", "label": 1, "time": "0001-01-01T00:00:00+01:00"}, "time"),
        ({"request_id": "a", "label": 1, "row": 2**64}, "row"),
        ({"request_id": "a", "label": True}, "label"),
    ]
    for item, name in cases:
        status, out = labels("bike", item)
        assert status == 400 and name in out["error"], out
    assert len(c.store.list("labels")) == 1  # only the first post was written


def test_token_on_events_and_labels(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    c = Collector(store, data_dir=tmp_path / "d1", token=SecretStr("s3cret"))
    req, resp = v1_pair("t")
    events = [structured(REQ, "t", req), structured(RESP, "t", resp)]
    assert batch(c, events)[0] == 401
    assert batch(c, events, b"Bearer wrong")[0] == 403
    assert batch(c, events, b"Basic s3cret")[0] == 403
    assert batch(c, events, b"Bearer s3cret") == (200, {"accepted": 2, "rejected": []})
    assert post(c, REQ, "u", req)[0] == 401  # binary mode too, unless --open-events
    assert run(c.post_labels([], b'{"model": "bike", "labels": []}'))[0] == 401
    assert c.metrics.rejected.labels("unauthorized")._value.get() == 5
    run(c.stop())

    c = Collector(store, data_dir=tmp_path / "d2", token=SecretStr("s3cret"), open_events=True)
    assert post(c, REQ, "u", req)[0] == 200  # KServe's logger sends no header
    assert post(c, RESP, "u", resp, authorization="Bearer wrong")[0] == 403
    assert batch(c, events)[0] == 401  # batches and labels still need the token
    assert run(c.post_labels([], b'{"model": "bike", "labels": []}'))[0] == 401


def test_memory_is_bounded_in_bytes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    mb = 1 << 20
    c = Collector(store, CollectorConfig(max_pending_bytes=5 * mb), data_dir=tmp_path / "data")
    big = {"instances": [{"temp": 1.0, "season": "s" * mb}]}  # 1 MiB unpaired requests
    for i in range(8):
        assert post(c, REQ, f"big{i}", big)[0] == 200
        assert c.pairer.pending_bytes <= 5 * mb
    assert len(c.pairer.pending) == 4  # 4 x (1 MiB + overhead) fit; the oldest 4 spilled
    assert c.pairer.spill_bytes > 4 * mb and c.metrics.unpaired._value.get() == 4
    assert run(c.flush()).halves == 4 and c.pairer.spill_bytes == 0  # stored, not held
    for i in range(8):
        post(c, RESP, f"big{i}", RESPONSE_BODY)
    run(c.stop())
    assert sorted(read_logs(store, "bike")["request_id"]) == [f"big{i}" for i in range(8)]


TIMESTAMPS = [
    "2011-02-27T17:00:00+00:00",
    "2011-02-27",
    "2011-02-27T17:00:00.123456-11:30",
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59",
    "9999-12-31T23:00:00-05:00",
    "27/02/2011",
    "",
]
TEMPS = [1, -2.5, 1.7e308, 2**63, True, "3", None]


def _predictor_accepts(body: dict) -> bool:
    try:
        decode_v1(body, SCHEMA, max_rows=10)
        return True
    except InvalidInput:
        return False


def _collector_accepts(c: Collector, rid: str, body: dict) -> bool:
    resp = {"predictions": [1.0], "model_name": "bike", "model_version": "1"}
    status, out = batch(c, [structured(REQ, rid, body), structured(RESP, rid, resp)])
    return out["accepted"] == 2


@pytest.mark.parametrize("ts", TIMESTAMPS)
def test_predictor_and_collector_agree_on_timestamps(c: Collector, ts: str) -> None:
    body = {"instances": [{"temp": 1.0, "season": "x"}], "timestamp": ts}
    assert _predictor_accepts(body) == _collector_accepts(c, "t", body)


@pytest.mark.parametrize("temp", TEMPS)
def test_predictor_and_collector_agree_on_numbers(c: Collector, temp: object) -> None:
    body = {"instances": [{"temp": temp, "season": "x"}]}
    assert _predictor_accepts(body) == _collector_accepts(c, "n", body)


def test_bodies_in_flight_are_bounded_in_bytes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    c = Collector(store, CollectorConfig(max_inflight_bytes=1 << 20), data_dir=tmp_path / "d")

    def call(body: bytes, chunk: int = 64 << 10) -> int:
        parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
        msgs = [{"body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
        sent: list[dict] = []

        async def receive() -> dict:
            return msgs.pop(0)

        async def send(msg: dict) -> None:
            sent.append(msg)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": as_asgi(headers(REQ, "i")),
        }
        run(c(scope, receive, send))
        return sent[0]["status"]

    big = json.dumps({"instances": [{"temp": 1.0, "season": "s" * (2 << 20)}]}).encode()
    assert call(big) == 503 and c.inflight_bytes == 0  # 2 MiB > 1 MiB in flight
    assert call(json.dumps(REQUEST_BODY).encode()) == 200 and c.inflight_bytes == 0
    assert call(b"x" * (17 << 20)) == 413  # one body over 16 MiB, whatever the bound
    assert c.metrics.rejected.labels("busy")._value.get() == 1


def test_a_failed_log_write_is_a_503_and_nothing_of_it_is_kept(
    c: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(batch: list) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(c.wal, "_write", full_disk)
    status, out = post(c, REQ, "d", REQUEST_BODY)
    assert status == 503 and "No space left" in out["error"]  # the sender retries
    assert not c.pairer.pending and c.wal.unreleased() == 0
    monkeypatch.undo()
    good_pair(c, "after")  # the disk is back: so is the collector
    assert run(c.flush()).rows == 1
