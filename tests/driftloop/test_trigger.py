"""Exactly-once triggering: leases and records on the store, both backends of it."""

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from driftloop.errors import DriftloopError
from driftloop.formats import TriggerRecord
from driftloop.trigger import TriggerLog, fire, reconcile, trigger_id
from monitoring.backends import KfpBackend


@dataclass
class FakeKfp:
    """A KFP API at the boundary: runs by name, like list_runs(filter=display_name)."""

    name: str = "fake"
    runs: dict[str, str] = field(default_factory=dict)  # run name -> run id
    state_of: str = "running"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, trig: TriggerRecord) -> str:
        with self.lock:
            return self.runs.setdefault(trig.run_name, f"run-{len(self.runs) + 1}")

    def state(self, run_id: str) -> str:
        return self.state_of


def _trigger(window_end="2012-02-01T00:00:00"):
    return TriggerRecord(
        id=trigger_id("bike", window_end),
        model="bike",
        version=1,
        reason=["drifted share 0.6 >= 0.5"],
        window={"start": "2012-01-01", "end": window_end},
        evidence={"report": "monitoring/bike/windows/x/report.html"},
        train_window={"start": "2011-08-01", "end": window_end},
    )


def test_trigger_id_is_deterministic_per_window():
    assert trigger_id("bike", "2012-02-01T00:00") == trigger_id("bike", "2012-02-01T00:00")
    assert trigger_id("bike", "2012-02-01T00:00") != trigger_id("bike", "2012-03-01T00:00")
    assert trigger_id("bike", "2012-02-01T00:00").startswith("trg-201202010000-")


def test_ten_concurrent_jobs_start_exactly_one_run(store):
    kfp = FakeKfp()
    barrier = threading.Barrier(10)
    results = []

    def job():
        log = TriggerLog(store, "bike")
        trig = _trigger()
        barrier.wait()
        log.create(trig)  # every job records the same trigger id; one record wins
        results.append(fire(log, log.get(trig.id), kfp))

    threads = [threading.Thread(target=job) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kfp.runs) == 1
    started = [r for r in results if r is not None]
    assert {(r.run_id, r.status) for r in started} == {("run-1", "running")}
    log = TriggerLog(store, "bike")
    assert [t.status for t in log.all()] == ["running"]
    # While that run is in flight, a new window's trigger does not start another run.
    later = _trigger("2012-03-01T00:00:00")
    log.create(later)
    assert fire(log, later, kfp) is None and len(kfp.runs) == 1
    # Once it has finished, the lease is released and the next trigger may run.
    kfp.state_of = "succeeded"
    reconcile(log, kfp)
    assert log.get(started[0].id).status == "succeeded"
    assert fire(log, log.get(later.id), kfp).status == "succeeded"
    assert len(kfp.runs) == 2


def test_unreachable_kfp_fails_the_trigger_then_retry_starts_one_run(s3_settings):
    from driftloop.store import open_store
    from tests.conftest import ROOT, free_port

    store = open_store(s3_settings)  # the cluster's kind of store: KFP pods can read it
    log = TriggerLog(store, "bike")
    trig = _trigger()
    log.create(trig)
    dead = KfpBackend(
        host=f"http://127.0.0.1:{free_port()}",
        spec_path=str(ROOT / "data" / "bike_sharing.yaml"),
        store=store,
    )
    failed = fire(log, trig, dead)
    assert failed.status == "failed" and failed.attempts == 1
    assert f"cannot start a run on {dead.host}" in failed.error
    assert log.held() is None  # the lease was released
    # Next window: the same trigger id is retried; the API now answers.
    retry = log.retryable()
    assert retry is not None and retry.id == trig.id
    kfp = FakeKfp()
    done = fire(log, retry, kfp)
    assert done.status == "running" and done.attempts == 2
    # Running now: nothing is left to retry, and firing it again starts no second run.
    # (Resuming an attempt that finds its run by name: tests/pipelines/test_submit.py.)
    assert log.retryable() is None
    again = fire(log, log.get(trig.id), kfp)
    assert again.status == "running" and again.run_id == done.run_id and len(kfp.runs) == 1


def test_expired_lease_is_taken_over(store, monkeypatch):
    from datetime import timedelta

    import driftloop.trigger as trigger_module

    log = TriggerLog(store, "bike")
    monkeypatch.setattr(trigger_module, "LEASE_TTL", timedelta(seconds=-1))
    assert log.acquire("a") == 1
    assert log.held() is None  # expired at once: a crashed holder does not block forever
    assert log.acquire("b") == 2


def test_start_errors_are_recorded_not_raised(store):
    class Broken(FakeKfp):
        def start(self, trig):
            raise DriftloopError("boom")

    log = TriggerLog(store, "bike")
    trig = _trigger()
    log.create(trig)
    assert fire(log, trig, Broken()).error == "boom"


def test_a_starter_killed_mid_run_is_detected_and_its_trigger_resumed(store, monkeypatch):
    """kill -9 of the drift job while its (blocking) run trains: the record says pending,
    its lease stops being renewed and lapses; the next job resumes the same trigger."""
    import driftloop.trigger as trigger_module

    log = TriggerLog(store, "bike")
    trig = _trigger()
    log.create(trig)
    # What the dead job left: attempt 1 recorded as pending, its lease never released.
    generation = log.acquire(trig.id)
    dead = log.get(trig.id).model_copy(update={"attempts": 1, "run_name": "bike-x-1"})
    log.save(dead)
    assert log.retryable() is None  # its lease is still live: it may be running
    monkeypatch.setattr(trigger_module, "LEASE_TTL", timedelta(seconds=-1))
    log.renew(generation)  # as if its last heartbeat was long ago
    retry = log.retryable()
    assert retry is not None and retry.id == trig.id
    kfp = FakeKfp()
    resumed = fire(log, retry, kfp)
    assert resumed.status == "running" and resumed.attempts == 1 and len(kfp.runs) == 1


def test_a_long_start_keeps_its_lease_alive(store, monkeypatch):
    """While a job blocks on a run longer than the lease's TTL, its heartbeat keeps the
    lease, so no other job can start a second run meanwhile."""
    import driftloop.trigger as trigger_module

    monkeypatch.setattr(trigger_module, "LEASE_TTL", timedelta(seconds=0.4))
    log = TriggerLog(store, "bike")
    seen: list[object] = []

    class Slow(FakeKfp):
        def start(self, trig):
            for _ in range(6):  # 1.2 s: three TTLs
                time.sleep(0.2)
                seen.append(log.acquire("other"))
            return super().start(trig)

    trig = _trigger()
    log.create(trig)
    assert fire(log, trig, Slow()).status == "running"
    assert seen == [None] * 6  # never free while it ran


def test_retries_stop_after_max_attempts(store):
    from driftloop.trigger import MAX_ATTEMPTS

    class Broken(FakeKfp):
        def start(self, trig):
            raise DriftloopError("cluster down")

    log = TriggerLog(store, "bike")
    trig = _trigger()
    log.create(trig)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        trig = fire(log, trig if attempt == 1 else log.retryable(), Broken())
        assert trig.status == "failed" and trig.attempts == attempt
    assert log.retryable() is None


def test_the_cooldown_anchor_is_the_last_completed_run(store):
    from driftloop.trigger import last_completed

    log = TriggerLog(store, "bike")
    kfp = FakeKfp(state_of="succeeded")
    first = _trigger("2012-02-01T00:00:00")
    log.create(first)
    fire(log, first, kfp)

    class Broken(FakeKfp):
        def start(self, trig):
            raise DriftloopError("down")

    second = _trigger("2012-03-01T00:00:00")
    log.create(second)
    fire(log, second, Broken())
    assert last_completed(log.all()) == datetime(2012, 2, 1)
