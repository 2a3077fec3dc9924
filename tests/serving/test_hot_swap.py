"""Promotion hot-swaps the served model with no failed request."""

from __future__ import annotations

import threading
import time

import httpx

from driftloop.formats import Lineage
from driftloop.steps import register
from tests.conftest import wait_for
from tests.serving.conftest import Served, rows


def test_promotion_swaps_without_failures(server: Served) -> None:
    w = server.watch
    inst = rows(w, 5)
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def fire() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            deadline = time.monotonic() + 30  # bounded in time and count
            while not stop.is_set() and time.monotonic() < deadline and len(results) < 20_000:
                r = c.post("/v1/models/bike-watch:predict", json={"instances": inst})
                results.append((r.status_code, r.json().get("model_version")))

    t = threading.Thread(target=fire)
    t.start()
    assert wait_for(lambda: len(results) >= 5)  # v1 is answering
    ref = register(w.model_dir, w.train_path, w.test_path, w.spec, w.store, Lineage(), False)
    assert ref.version == 2
    w.registry.promote(w.spec.name, ref.version, reason="test")
    assert wait_for(lambda: any(v == "2" for _, v in results[-5:]), timeout=15)
    swapped = len(results)
    assert wait_for(lambda: len(results) >= swapped + 5)  # and keeps answering after it
    stop.set()
    t.join()
    assert results and all(code == 200 for code, _ in results)
    versions = [v for _, v in results]
    assert versions[0] == "1" and versions[-1] == "2"
    switch = versions.index("2")
    assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
