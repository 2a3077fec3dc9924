"""What 200 means, with real collector processes: a crash, a store outage at shutdown and
two replicas fed round-robin lose nothing acknowledged and log every row exactly once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import pytest

from driftloop.decode import Event
from driftloop.errors import ConfigError
from driftloop.payloads import read_logs
from driftloop.ports import free_port
from driftloop.settings import Settings, load_settings
from driftloop.store import open_store
from monitoring.wal import WriteAheadLog, decode, encode
from tests.conftest import wait_for
from tests.monitoring.helpers import REQ, RESP, collector, register_fake, structured, v1_pair

HOLD = ("--max-age", "600", "--batch-rows", "1000000")  # no flush before the test says so


def _batch(rids: list[str]) -> bytes:
    import json

    events = []
    for rid in rids:
        req, resp = v1_pair(rid)
        events += [structured(REQ, rid, req), structured(RESP, rid, resp)]
    return json.dumps(events).encode()


def test_kill_9_mid_stream_then_restart_loses_no_acknowledged_row(
    local_settings: Settings, tmp_path: Path
) -> None:
    store = open_store(local_settings)
    register_fake(store, tmp_path)
    data, port = tmp_path / "data", free_port()
    acked: list[str] = []

    with collector(local_settings, *HOLD, data_dir=data, port=port) as c:

        def send() -> None:  # 4 senders, 10 pairs a post, until the collector dies
            with httpx.Client(timeout=5) as http:
                while True:
                    rids = [uuid.uuid4().hex for _ in range(10)]
                    try:
                        r = http.post(
                            f"http://127.0.0.1:{port}/",
                            content=_batch(rids),
                            headers={"content-type": "application/cloudevents-batch+json"},
                        )
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200 and r.json()["accepted"] == 20:
                        acked.extend(rids)

        senders = [threading.Thread(target=send) for _ in range(4)]
        for t in senders:
            t.start()
        assert wait_for(lambda: len(acked) >= 400, timeout=60)
        c.kill()  # posts in flight, nothing flushed (max-age 600)
        for t in senders:
            t.join(30)
    assert read_logs(store, "bike").empty  # every acknowledged row was only in memory...

    with collector(local_settings, data_dir=data, port=port) as c:
        assert c.terminate() == 0
    logged = read_logs(store, "bike")
    assert set(acked) <= set(logged["request_id"])  # ...and in the write-ahead log
    assert not logged.duplicated(["request_id", "row"]).any()
    assert "replayed" in c.stderr
    assert not list((data / "wal").glob("*.log"))  # all in the store: the log is empty


def test_store_down_at_sigterm_keeps_the_rows_for_the_next_start(tmp_path: Path) -> None:
    from minio import Minio
    from moto.server import ThreadedMotoServer

    port = free_port()  # an S3 server of this test's own, to stop and start again
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    Minio(f"127.0.0.1:{port}", access_key="test", secret_key="test", secure=False).make_bucket(
        bucket
    )
    settings = load_settings(
        store_uri=f"s3://{bucket}/driftloop",
        s3_endpoint=f"127.0.0.1:{port}",
        s3_access_key="test",
        s3_secret_key="test",
        s3_secure=False,
        s3_region="us-east-1",
    )
    store = open_store(settings)
    register_fake(store, tmp_path)
    data = tmp_path / "data"
    try:
        with collector(settings, *HOLD, "--shutdown-retry", "1", data_dir=data) as c:
            for i in range(50):
                c.send_pair(f"down{i}", n=2)
            assert c.send(REQ, "lone", {"instances": [{"temp": 1.0}]}).status_code == 200
            server.stop()  # S3 goes away, then Kubernetes sends SIGTERM
            assert c.terminate() == 0
        assert "101 events kept in the write-ahead log" in c.stderr
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        with collector(settings, data_dir=data) as c:
            assert c.terminate() == 0
        logged = read_logs(store, "bike")
        assert len(logged) == 100 and logged["request_id"].nunique() == 50
        assert len(store.list("logs/bike/halves/request")) == 1  # the lone request too
    finally:
        server.stop()


def test_two_replicas_fed_round_robin_log_every_row_exactly_once(
    local_settings: Settings, tmp_path: Path
) -> None:
    """KServe's logger posts the halves of a pair separately; a Service spreads them
    over the replicas; a retry may send a pair twice. Each row is read exactly once."""
    store = open_store(local_settings)
    register_fake(store, tmp_path)
    with (
        collector(local_settings, "--unpaired-ttl", "0.5", "--max-age", "0.5") as a,
        collector(local_settings, "--unpaired-ttl", "0.5", "--max-age", "0.5") as b,
    ):
        replicas = [a, b]
        for i in range(60):
            rid = f"rr{i}"
            req, resp = v1_pair(rid, n=2)
            first, second = replicas[i % 2], replicas[(i // 2) % 2]  # split half the pairs
            assert first.send(REQ, rid, req).status_code == 200
            assert second.send(RESP, rid, resp).status_code == 200
            if i % 10 == 0:  # a retried pair, to the other replica this time
                assert second.send(REQ, rid, req).status_code == 200
                assert first.send(RESP, rid, resp).status_code == 200
        assert wait_for(lambda: len(store.list("logs/bike/halves")) >= 2, timeout=20)
        assert a.terminate() == b.terminate() == 0
    logged = read_logs(store, "bike", 1, "default")
    assert len(logged) == 120  # 60 requests x 2 instances, no copy
    assert sorted(set(logged["request_id"])) == sorted(f"rr{i}" for i in range(60))
    assert all(sorted(rows) == [0, 1] for _, rows in logged.groupby("request_id")["row"])
    assert logged["prediction"].notna().all() and logged["temp"].notna().all()


# -- the write-ahead log itself ------------------------------------------------------------
def _event(i: int) -> Event:
    return Event(
        True, b'{"instances": [{"temp": %d}]}' % i, 1.0e9 + i, None, "bike", "ns", "default"
    )


def test_wal_replays_intact_records_and_ignores_a_torn_tail(tmp_path: Path) -> None:
    import asyncio

    wal = WriteAheadLog(tmp_path, segment_bytes=300)
    segs = [wal.append(encode(f"r{i}", _event(i))) for i in range(6)]
    asyncio.run(wal.commit())
    assert len(set(segs)) > 1 and wal.synced == 6  # several segments
    with pytest.raises(ConfigError, match="in use by another collector"):
        WriteAheadLog(tmp_path)
    wal._fd = None  # a crash: no close, no cleanup
    import os

    os.close(wal._lock)
    last = sorted((tmp_path / "wal").glob("*.log"))[-1]
    data = last.read_bytes()  # preallocated: the records, then zeros
    end = len(data.rstrip(b"\0"))
    last.write_bytes(data[: end - 5])  # the last record torn mid-write

    again = WriteAheadLog(tmp_path)
    replayed = list(again.replay())
    assert [rid for _, (rid, _) in replayed] == [f"r{i}" for i in range(5)]
    _, (_, ev) = replayed[2]
    assert (ev.raw, ev.received, ev.service) == (_event(2).raw, 1.0e9 + 2, "bike")
    for seg, _ in replayed:
        again.release(seg)
    assert again.unreleased() == 0
    again.close()
    assert not list((tmp_path / "wal").glob("*.log"))  # released segments are deleted


def test_wal_record_round_trip() -> None:
    ev = _event(7)
    ev.rows, ev.model, ev.version = 3, "bike", 2
    rid, back = decode(b"".join(encode("x", ev)))
    assert rid == "x" and (back.raw, back.rows, back.model, back.version) == (ev.raw, 3, "bike", 2)
