"""The collector as a real subprocess on 127.0.0.1: flush triggers, SIGTERM, S3, labels."""

from __future__ import annotations

from pathlib import Path

from driftloop.payloads import read_labels, read_logs
from driftloop.settings import Settings
from driftloop.store import open_store
from tests.conftest import wait_for
from tests.monitoring.helpers import REQ, RESP, collector, register_fake, structured, v1_pair


def test_flushes_on_size_before_any_timer(local_settings: Settings, tmp_path: Path) -> None:
    store = open_store(local_settings)
    register_fake(store, tmp_path)
    with collector(local_settings, "--batch-rows", "4", "--max-age", "600") as c:
        for i in range(2):
            c.send_pair(f"s{i}", n=2)  # 4 rows: a full batch
        assert wait_for(lambda: len(store.list("logs")) == 1, timeout=10)
        c.send_pair("s-extra")  # 1 row: stays buffered (600 s age limit)...
        assert c.metric("driftloop_collector_buffered_rows") == 1
        assert len(read_logs(store, "bike")) == 4
        assert c.terminate() == 0
    assert len(read_logs(store, "bike")) == 5  # ...until shutdown flushes it


def test_batched_mode_over_http(local_settings: Settings, tmp_path: Path) -> None:
    store = open_store(local_settings)
    register_fake(store, tmp_path)
    with collector(local_settings) as c:
        events = []
        for rid in ("b1", "b2"):
            req, resp = v1_pair(rid, n=2)
            events += [structured(REQ, rid, req), structured(RESP, rid, resp)]
        assert c.send_batch(events).json() == {"accepted": 4, "rejected": []}
        req, resp = v1_pair("b3")
        mixed = [structured(REQ, "b3", req), {"type": REQ}, structured(RESP, "b3", resp)]
        r = c.send_batch(mixed)  # the bad event is refused alone, named by its index
        assert r.status_code == 200 and r.json()["accepted"] == 2
        [rejected] = r.json()["rejected"]
        assert rejected["index"] == 1 and "ce-id" in rejected["error"]
        assert c.send_batch([{"type": REQ}]).status_code == 422  # nothing accepted
        assert c.send_batch({"not": "a list"}).status_code == 400  # type: ignore[arg-type]
        assert c.terminate() == 0
    logged = read_logs(store, "bike")
    assert sorted(logged["request_id"]) == ["b1", "b1", "b2", "b2", "b3"]


def test_flushes_on_age(local_settings: Settings, tmp_path: Path) -> None:
    store = open_store(local_settings)
    register_fake(store, tmp_path)
    with collector(local_settings, "--batch-rows", "10000", "--max-age", "0.5") as c:
        c.send_pair("old")
        assert wait_for(lambda: not read_logs(store, "bike").empty, timeout=10)
        assert c.metric("driftloop_collector_rows_written_total") == 1
        c.terminate()


def test_sigterm_flushes_everything_and_stores_unpaired_halves(
    local_settings: Settings, tmp_path: Path
) -> None:
    store = open_store(local_settings)
    register_fake(store, tmp_path)
    with collector(local_settings, "--batch-rows", "100000", "--max-age", "600") as c:
        for i in range(50):
            c.send_pair(f"r{i}", n=3, endpoint="canary")
        for i in range(3):  # requests whose responses never come (e.g. a 500 upstream)
            assert c.send(REQ, f"lone{i}", {"instances": [{"temp": 1.0}]}).status_code == 200
        bad = c.send(RESP, "", {"predictions": [1]})
        assert bad.status_code == 400 and "ce-id" in bad.json()["error"]
        assert c.send(REQ, "x", b"{oops").status_code == 400
        assert c.metric("driftloop_collector_rejected_total") == 2  # refused, not dropped
        assert c.metric("driftloop_collector_pending_events") == 3
        assert read_logs(store, "bike").empty  # nothing flushed yet
        assert c.terminate() == 0
    df = read_logs(store, "bike", 1, "canary")
    assert len(df) == 150 and df["request_id"].nunique() == 50
    # The lone requests are kept as half-records: a later response could still pair.
    assert len(store.list("logs/bike/halves/request")) == 1
    assert "3 unpaired halves written" in c.stderr
    assert "0 events kept in the write-ahead log" in c.stderr


def test_s3_store_logs_and_labels(s3_settings: Settings, tmp_path: Path) -> None:
    store = open_store(s3_settings)
    register_fake(store, tmp_path, versions=2)
    with collector(s3_settings) as c:
        c.send_pair("s3-a", n=2)
        assert (
            c.send(
                RESP,
                "s3-b",
                {
                    "predictions": ["yes"],
                    "probabilities": [0.7],
                    "model_name": "bike",
                    "model_version": "2",
                },
            ).status_code
            == 200
        )
        assert c.send(REQ, "s3-b", {"instances": [{"temp": 3, "season": "x"}]}).status_code == 200
        r = c.http.post(
            "/labels",
            json={
                "model": "bike",
                "labels": [
                    {"request_id": "s3-a", "row": 1, "label": 120.0, "time": "2024-05-02T00:00:00Z"}
                ],
            },
        )
        assert r.status_code == 200 and r.json()["written"] == 1
        bad = c.http.post("/labels", json={"model": "bike", "labels": [{"row": 0}]})
        assert bad.status_code == 400 and "request_id" in bad.json()["error"]
        assert c.terminate() == 0
    assert store.uri.startswith("s3://")
    assert len(read_logs(store, "bike", 1)) == 2
    v2 = read_logs(store, "bike", 2)
    assert (v2["label"][0], v2["prediction"][0]) == ("yes", 0.7)
    labels = read_labels(store, "bike")
    assert labels[["request_id", "row", "actual_value"]].values.tolist() == [["s3-a", 1, 120.0]]


def test_token_from_the_settings_or_a_file_guards_posts_not_health(
    local_settings: Settings, tmp_path: Path
) -> None:
    store = open_store(local_settings)
    register_fake(store, tmp_path)
    token = tmp_path / "token"
    token.write_text("t0ken\n")  # as a Secret key is mounted
    env = {"DRIFTLOOP_COLLECTOR_TOKEN": "from-env"}
    for args, extra, good in [((), env, "from-env"), (("--token-file", str(token)), {}, "t0ken")]:
        with collector(local_settings, *args, env=extra) as c:
            assert c.http.get("/healthz").status_code == 200  # probes need no token
            assert c.http.get("/metrics").status_code == 200
            req, _ = v1_pair("a")
            missing = c.send(REQ, "a", req)
            assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith(
                "Bearer"
            )
            assert c.send(REQ, "a", req, authorization="Bearer nope").status_code == 403
            assert c.send(REQ, "a", req, authorization=f"Bearer {good}").status_code == 200
            labels = {"model": "bike", "labels": [{"request_id": "a", "label": 1}]}
            assert c.http.post("/labels", json=labels).status_code == 401
            ok = c.http.post("/labels", json=labels, headers={"authorization": f"Bearer {good}"})
            assert ok.status_code == 200
            assert c.terminate() == 0
        assert "no collector token configured" not in c.stderr
