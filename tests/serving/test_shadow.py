"""Shadow scoring: the champion answers, a second version scores the same inputs after
the answer and is logged under the same request id as ``endpoint: shadow``; a shadow
that does not load, does not fit or raises never touches the answer."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from driftloop.errors import ConfigError
from driftloop.formats import Lineage, VersionFiles
from driftloop.payloads import BATCH_CONTENT_TYPE, read_logs
from driftloop.registry import Registry, VersionRef
from driftloop.store import LocalStore
from monitoring.collector import Collector
from serving.artifacts import Bundle, load_dir, load_from_registry
from serving.model import Predictor
from serving.shadow import Shadow, check_compatible
from tests.conftest import wait_for
from tests.monitoring.helpers import run
from tests.serving.conftest import Receiver, Trained, rows
from tests.serving.test_server import v2_body


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def events_of(receiver: Receiver, service: str) -> list[dict]:
    return [e for e in receiver.events() if e["inferenceservicename"] == service]


def pairs(receiver: Receiver, service: str) -> dict[tuple[str, str], dict[str, dict]]:
    """(request id, endpoint) -> {"request": body, "response": body}."""
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for e in events_of(receiver, service):
        out.setdefault((e["id"], e["endpoint"]), {})[e["type"].rsplit(".", 1)[1]] = e["data"]
    return out


def test_the_answer_is_the_champions_and_both_predictions_are_logged_under_one_id(
    client: httpx.Client, bike: Trained, shadowed: Registry, receiver: Receiver
) -> None:
    receiver.posts.clear()
    v1 = {"instances": rows(bike, 3), "timestamp": "2011-02-27T17:00:00+00:00"}
    alone = client.post("/v1/models/bike:predict", json=v1)  # the same weights, no shadow
    r = client.post("/v1/models/bike-shadowed:predict", json=v1, headers={"x-request-id": "s-1"})
    assert alone.status_code == r.status_code == 200, r.text
    assert r.json()["predictions"] == alone.json()["predictions"]
    assert r.json()["model_version"] == "1"
    untagged = client.post("/v1/models/bike-shadowed:predict", json=v1)  # no x-request-id
    assert untagged.status_code == 200

    assert wait_for(lambda: len(events_of(receiver, "bike-shadowed")) >= 8)
    logged = pairs(receiver, "bike-shadowed")
    champion, shadow = logged[("s-1", "default")], logged[("s-1", "shadow")]
    assert champion["response"] == r.json()
    assert shadow["request"] == champion["request"] == v1  # the same inputs
    assert shadow["response"]["model_version"] == "2"
    # What v2 answers when it serves alone: the shadow really is v2, scored on these rows.
    v2 = Predictor(
        "bike-shadowed", lambda: load_from_registry(shadowed, VersionRef("bike-sharing", 2))
    )
    v2.load()
    expected = v2.postprocess(v2.predict(v2.preprocess(v1)))
    assert isinstance(expected, dict)
    assert shadow["response"]["predictions"] == pytest.approx(expected["predictions"])
    assert shadow["response"]["predictions"] != champion["response"]["predictions"]
    # A request without an id still pairs: one generated id for both.
    other = {rid for rid, _ in logged if rid != "s-1"}
    assert len(other) == 1 and {e for rid, e in logged if rid in other} == {"default", "shadow"}
    assert sample("driftloop_shadow_version", model="bike-shadowed") == 2


def test_requests_scored_together_each_get_their_own_predictions(
    client: httpx.Client, bike: Trained, shadowed: Registry, receiver: Receiver
) -> None:
    """Requests that arrive within the shadow's linger are scored in one model call;
    each request's logged rows are still its own, as v2 alone answers them."""
    receiver.posts.clear()
    batches, start = [], 0
    for i, n in enumerate([1, 3, 2, 5, 1, 4]):
        inst = rows(bike, start + n)[start:]
        start += n
        batches.append((f"t-{i}", {"instances": inst}))
        r = client.post(
            "/v1/models/bike-shadowed:predict",
            json=batches[-1][1],
            headers={"x-request-id": f"t-{i}"},
        )
        assert r.status_code == 200
    assert wait_for(lambda: len(events_of(receiver, "bike-shadowed")) >= 4 * len(batches))
    logged = pairs(receiver, "bike-shadowed")
    v2 = Predictor("bike-v2", lambda: load_from_registry(shadowed, VersionRef("bike-sharing", 2)))
    v2.load()
    for rid, body in batches:
        alone = v2.postprocess(v2.predict(v2.preprocess(body)))
        assert isinstance(alone, dict)
        got = logged[(rid, "shadow")]["response"]
        assert got["predictions"] == pytest.approx(alone["predictions"])
        assert got["rules_fired"] == alone["rules_fired"]
        assert logged[(rid, "shadow")]["request"] == body


def test_v2_requests_are_shadowed_under_their_id(
    client: httpx.Client, bike: Trained, receiver: Receiver
) -> None:
    receiver.posts.clear()
    r = client.post(
        "/v2/models/bike-shadowed/infer", json={**v2_body(bike, rows(bike, 2)), "id": "v2-s"}
    )
    assert r.status_code == 200, r.text
    assert wait_for(lambda: ("v2-s", "shadow") in pairs(receiver, "bike-shadowed"))
    logged = pairs(receiver, "bike-shadowed")
    assert logged[("v2-s", "shadow")]["response"]["model_version"] == "2"
    assert logged[("v2-s", "default")]["response"]["model_version"] == "1"
    assert logged[("v2-s", "shadow")]["request"] == logged[("v2-s", "default")]["request"]


def test_shadow_rows_reach_the_log_beside_the_champions(
    client: httpx.Client, bike: Trained, receiver: Receiver, tmp_path: Path
) -> None:
    """Through the real collector: one request, two rows per instance, one per endpoint,
    under the same request id; the read path keeps both (a shadow row is not a copy)."""
    receiver.posts.clear()
    for i in range(2):
        r = client.post(
            "/v1/models/bike-shadowed:predict",
            json={"instances": rows(bike, 2)},
            headers={"x-request-id": f"col-{i}"},
        )
        assert r.status_code == 200
    assert wait_for(lambda: len(events_of(receiver, "bike-shadowed")) >= 8)
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "version"  # the collector logs committed versions only: v1 and v2
    src.mkdir()
    shutil.copy(bike.dir / VersionFiles.SCHEMA, src / VersionFiles.SCHEMA)
    for _ in range(2):
        Registry(store).register("bike-shadowed", src, Lineage(), "tabular-torch")
    collector = Collector(store, data_dir=tmp_path / "data")
    headers = [(b"content-type", BATCH_CONTENT_TYPE.encode())]
    for _, batch in receiver.posts:
        status, out = run(collector.post_events(headers, json.dumps(batch).encode()))
        assert status == 200 and not json.loads(out)["rejected"], out
    assert run(collector.flush()).rows == 8
    logged = read_logs(store, "bike-shadowed")
    assert len(logged) == 8
    by = logged.groupby(["endpoint", "version"]).size().to_dict()
    assert by == {("default", 1): 4, ("shadow", 2): 4}
    assert set(logged["request_id"]) == {"col-0", "col-1"}
    shadow_only = read_logs(store, "bike-shadowed", 2, "shadow")
    assert len(shadow_only) == 4 and (shadow_only["endpoint"] == "shadow").all()


def test_a_shadow_that_cannot_load_leaves_the_champion_serving_and_is_on_metrics(
    client: httpx.Client, bike: Trained, receiver: Receiver
) -> None:
    receiver.posts.clear()
    r = client.post(
        "/v1/models/bike-shadow-missing:predict",
        json={"instances": rows(bike, 2)},
        headers={"x-request-id": "m-1"},
    )
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    exposed = client.get("/metrics").text
    assert 'driftloop_shadow_version{model="bike-shadow-missing"} 0.0' in exposed
    assert 'driftloop_shadow_errors_total{model="bike-shadow-missing",stage="load"} 1.0' in exposed
    assert wait_for(lambda: ("m-1", "default") in pairs(receiver, "bike-shadow-missing"))
    assert {e for _, e in pairs(receiver, "bike-shadow-missing")} == {"default"}


def test_a_shadow_that_raises_never_fails_a_request(
    client: httpx.Client, bike: Trained, receiver: Receiver
) -> None:
    before = sample("driftloop_shadow_errors_total", model="bike-shadow-raising", stage="predict")
    alone = client.post("/v1/models/bike:predict", json={"instances": rows(bike, 4)})
    for _ in range(5):
        r = client.post("/v1/models/bike-shadow-raising:predict", json={"instances": rows(bike, 4)})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == alone.json()["predictions"]
    v2 = client.post("/v2/models/bike-shadow-raising/infer", json=v2_body(bike, rows(bike, 2)))
    assert v2.status_code == 200, v2.text
    key = {"model": "bike-shadow-raising", "stage": "predict"}
    assert wait_for(lambda: sample("driftloop_shadow_errors_total", **key) == before + 6)
    assert "driftloop_shadow_errors_total" in client.get("/metrics").text
    assert {e for _, e in pairs(receiver, "bike-shadow-raising")} <= {"default"}


def test_a_share_of_zero_logs_no_shadow_rows(
    client: httpx.Client, bike: Trained, receiver: Receiver
) -> None:
    receiver.posts.clear()
    for i in range(5):
        r = client.post(
            "/v1/models/bike-shadow-off:predict",
            json={"instances": rows(bike, 1)},
            headers={"x-request-id": f"off-{i}"},
        )
        assert r.status_code == 200
    assert wait_for(lambda: len(pairs(receiver, "bike-shadow-off")) >= 5)
    assert {e for _, e in pairs(receiver, "bike-shadow-off")} == {"default"}
    assert sample("driftloop_shadow_scored_total", model="bike-shadow-off") == 0
    assert sample("driftloop_shadow_version", model="bike-shadow-off") == 2  # loaded, idle


def test_a_shadow_with_other_inputs_is_refused_with_one_message(
    bike: Trained, bank: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError, match="a shadow must accept the same inputs"):
        check_compatible(load_dir(bike.dir).schema, load_dir(bank.dir).schema, 1)
    shadow = Shadow("bike-vs-bank", 1, lambda: load_dir(bank.dir))
    predictor = Predictor("bike-vs-bank", lambda: load_dir(bike.dir), shadow=shadow)
    with caplog.at_level(logging.ERROR, logger="serving.shadow"):
        assert predictor.load()  # the champion serves...
    assert shadow.bundle is None and not shadow.active  # ...and the shadow was refused
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [shadow.error]
    assert "shadow v1 of bike-vs-bank not loaded" in shadow.error
    assert "a shadow must accept the same inputs" in shadow.error
    assert sample("driftloop_shadow_errors_total", model="bike-vs-bank", stage="load") == 1
    assert sample("driftloop_shadow_version", model="bike-vs-bank") == 0


def test_a_hot_swap_to_other_inputs_drops_the_shadow(
    bike: Trained, bank: Trained, shadowed: Registry
) -> None:
    v2 = VersionRef("bike-sharing", 2)
    shadow = Shadow("bike-swapped", 2, lambda: load_from_registry(shadowed, v2))
    predictor = Predictor("bike-swapped", lambda: load_dir(bike.dir), shadow=shadow)
    predictor.load()
    assert shadow.active and sample("driftloop_shadow_version", model="bike-swapped") == 2
    predictor.swap(load_dir(bank.dir))
    assert not shadow.active and "same inputs" in shadow.error
    assert sample("driftloop_shadow_version", model="bike-swapped") == 0


def test_an_image_shadow_must_take_the_same_tensor(digits: Trained) -> None:
    schema = load_dir(digits.dir).schema
    check_compatible(schema, schema, 2)  # the same contract: accepted
    tensor = schema.input.model_copy(update={"shape": [1, 16, 16]})  # type: ignore[union-attr]
    other = schema.model_copy(update={"input": tensor})
    with pytest.raises(ConfigError, match="shadow v2 reads its inputs as .*same inputs"):
        check_compatible(schema, other, 2)


def test_queued_requests_are_scored_together_and_a_failing_one_alone(bike: Trained) -> None:
    """The scorer takes what gathered in its linger in one call; a call that raises is
    retried one request at a time, so only the request it fails on is lost."""
    calls: list[list[str]] = []

    def score(bundle: object, jobs: list[str]) -> None:
        calls.append(list(jobs))
        if "bad" in jobs:
            raise ValueError("cannot score 'bad'")

    shadow = Shadow("bike-batched", 1, lambda: load_dir(bike.dir), linger_s=0.2)
    assert shadow.load(load_dir(bike.dir).schema, score)
    try:
        for job in ["a", "b", "bad", "c"]:
            shadow.submit(job)
        assert wait_for(shadow.idle)
    finally:
        shadow.close()
    assert calls[0] == ["a", "b", "bad", "c"]  # one call for the four...
    assert calls[1:] == [["a"], ["b"], ["bad"], ["c"]]  # ...then one at a time
    assert sample("driftloop_shadow_scored_total", model="bike-batched") == 3
    assert sample("driftloop_shadow_errors_total", model="bike-batched", stage="predict") == 1


def test_the_container_loads_its_shadow_from_the_store(bike: Trained, shadowed: Registry) -> None:
    """``python -m serving --shadow_version 2``: version 2 of the model named in the
    served version's manifest, from the settings' store, verified as it is downloaded."""
    import argparse

    from kserve.model_server import parser as kserve_parser

    from driftloop.settings import load_settings
    from serving.__main__ import add_arguments, shadow_for

    p = argparse.ArgumentParser(parents=[kserve_parser])
    add_arguments(p)
    argv = ["--model_name", "bike-pod", "--model_dir", str(bike.dir)]
    settings = load_settings(store_uri=shadowed.store.uri)  # type: ignore[attr-defined]
    assert shadow_for(p.parse_args(argv), settings) is None
    shadow = shadow_for(p.parse_args([*argv, "--shadow_version", "2"]), settings)
    assert shadow is not None and shadow.share == 1.0
    assert shadow.load(load_dir(bike.dir).schema, lambda bundle, jobs: None)
    assert shadow.bundle is not None and shadow.bundle.version == 2
    shadow.close()
    missing = shadow_for(p.parse_args([*argv, "--shadow_version", "7"]), settings)
    assert missing is not None and not missing.load(
        load_dir(bike.dir).schema, lambda bundle, jobs: None
    )
    assert "shadow v7 of bike-pod not loaded" in missing.error


def test_a_shadow_promoted_to_serve_is_no_longer_a_shadow(shadowed: Registry) -> None:
    def version(n: int) -> Bundle:
        return load_from_registry(shadowed, VersionRef("bike-sharing", n))

    shadow = Shadow("bike-promoted", 2, lambda: version(2))
    predictor = Predictor("bike-promoted", lambda: version(1), shadow=shadow)
    predictor.load()
    assert shadow.active
    predictor.swap(version(2))  # the alias moved to the shadow's version
    assert not shadow.active and shadow.error == ""  # dropped, and not an error
    assert sample("driftloop_shadow_version", model="bike-promoted") == 0
    assert sample("driftloop_shadow_errors_total", model="bike-promoted", stage="load") == 0


def test_a_shadow_that_falls_behind_skips_requests_bounded_in_rows(bike: Trained) -> None:
    started, release = threading.Event(), threading.Event()
    scored: list[str] = []

    def score(bundle: object, jobs: list[str]) -> None:
        started.set()
        release.wait(10)  # a slow shadow
        scored.extend(jobs)

    shadow = Shadow("bike-behind", 1, lambda: load_dir(bike.dir), linger_s=0, max_pending_rows=10)
    assert shadow.load(load_dir(bike.dir).schema, score)
    try:
        shadow.submit("first", rows=1)
        assert wait_for(started.is_set)  # taken: the queue is empty again
        shadow.submit("six", rows=6)
        shadow.submit("five", rows=5)  # 6 + 5 rows > 10: skipped
        shadow.submit("four", rows=4)  # 6 + 4 fits
        release.set()
        assert wait_for(shadow.idle)
    finally:
        shadow.close()
    assert scored == ["first", "six", "four"]
    assert sample("driftloop_shadow_skipped_total", model="bike-behind") == 1
