from __future__ import annotations

import threading

import pytest

from driftloop.errors import NotFound, StoreError
from driftloop.settings import load_settings
from driftloop.store import open_store


def test_put_get_list_delete_round_trip(store):
    store.put("a/b/one.bin", b"\x00\x01")
    store.put_json("a/two.json", {"x": 1})
    store.put("ab/other", b"not under a/")
    assert store.get("a/b/one.bin") == b"\x00\x01"
    assert store.get_json("a/two.json") == {"x": 1}
    assert store.list("a") == ["a/b/one.bin", "a/two.json"]
    assert store.exists("a/two.json") and not store.exists("a/three")
    store.delete("a/two.json")
    assert store.list("a") == ["a/b/one.bin"]


def test_put_replaces_whole_object(store):
    store.put("k", b"old" * 1000)
    store.put("k", b"new")
    assert store.get("k") == b"new"


def test_missing_key_is_not_found(store):
    with pytest.raises(NotFound, match="does not exist"):
        store.get("nope/never")


def test_create_is_exclusive(store):
    assert store.create("lease", b"first") is True
    assert store.create("lease", b"second") is False
    assert store.get("lease") == b"first"


def test_concurrent_create_has_exactly_one_winner(store):
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        if store.create("claim", str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("claim") == str(wins[0]).encode()


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "dir/"])
def test_bad_keys_are_refused(store, key):
    with pytest.raises(StoreError, match="invalid store key"):
        store.put(key, b"x")


def test_unreachable_s3_is_one_clear_store_error():
    from tests.conftest import free_port

    settings = load_settings(
        store_uri="s3://bucket/p", s3_endpoint=f"127.0.0.1:{free_port()}", s3_secure=False
    )
    with pytest.raises(StoreError, match="cannot read s3://bucket/p/x"):
        open_store(settings).get("x")


def test_a_hung_s3_server_fails_in_seconds_not_minutes(tmp_path):
    """A server that accepts connections and never answers (a hung S3): the read timeout
    and one retry bound the wait; the error names the store."""
    import socket
    import threading
    import time

    from driftloop.errors import StoreError
    from driftloop.settings import load_settings
    from driftloop.store import open_store

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # never read, never answer
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    settings = load_settings(
        store_uri="s3://bucket/x",
        s3_endpoint=f"127.0.0.1:{server.getsockname()[1]}",
        s3_secure=False,
        s3_access_key="k",
        s3_secret_key="s",
        s3_region="us-east-1",
        s3_timeout_s=0.5,
    )
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="cannot read s3://bucket/x/k"):
        open_store(settings).get("k")
    assert time.monotonic() - t0 < 10  # (0.5 s read timeout) x 2 attempts, not 190 s
    stop.set()
    for c in held:
        c.close()
    server.close()
