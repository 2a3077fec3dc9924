"""`driftloop pipeline submit` and the KFP trigger backend against a fake KFP API."""

import json

import pytest
import yaml

from driftloop import __version__
from driftloop.errors import ConfigError
from driftloop.formats import TriggerRecord
from driftloop.spec import load_spec
from driftloop.store import open_store
from driftloop.trigger import TriggerLog, fire, reconcile, trigger_id
from monitoring.backends import KfpBackend
from pipelines.run import RunRequest, submit
from tests.conftest import ROOT
from tests.fake_kfp import FakeKfp

SPEC = ROOT / "data" / "bike_sharing.yaml"


@pytest.fixture
def kfp_api():
    api = FakeKfp()
    yield api
    api.close()


@pytest.fixture
def s3_store(s3_settings):
    return open_store(s3_settings)


def test_submit_uploads_the_release_once_and_runs_that_version(kfp_api, s3_store):
    spec = load_spec(SPEC).model_copy(update={"rules": "bike_rules.yaml"})
    req = RunRequest(spec=spec, store_uri=s3_store.uri, end="2012-01-01")
    first = submit(req, s3_store, kfp_api.host, "driftloop", "bike-manual")
    second = submit(
        req, s3_store, kfp_api.host, "driftloop", "bike-manual-2", schedule="0 0 3 * * 1"
    )
    assert [p["display_name"] for p in kfp_api.pipelines] == ["driftloop-training"]
    assert [v["display_name"] for v in kfp_api.versions] == [f"driftloop-training-{__version__}"]
    assert first.version_id == second.version_id == "pv1"
    run = kfp_api.runs[0]
    assert run["display_name"] == "bike-manual" and run["experiment_id"] == "e1"
    assert run["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": "pv1"}
    params = run["runtime_config"]["parameters"]
    assert params["end"] == "2012-01-01" and params["store_uri"] == s3_store.uri
    assert "name: bike-sharing" in params["spec_yaml"] and len(params["trials"]) == 5  # 4 + warm
    # No parameter names a file on this machine: the data and the rules were uploaded to
    # the store, content-addressed, and the spec names them there.
    assert str(ROOT) not in json.dumps(params)
    sent = yaml.safe_load(params["spec_yaml"])
    for uri, local in (
        (sent["source"]["path"], SPEC.parent / "bike_sharing_hourly.csv"),
        (sent["rules"], SPEC.parent / "bike_rules.yaml"),
    ):
        assert uri.startswith(f"{s3_store.uri}/datasets/")
        assert s3_store.get(uri.removeprefix(s3_store.uri + "/")) == local.read_bytes()
    assert len(s3_store.list("datasets")) == 2  # submitted twice, stored once
    rec = kfp_api.recurring[0]
    assert second.recurring_run_id == "rr1"
    assert rec["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(rec["max_concurrency"]) == 1 and rec["no_catchup"] is True


def test_submit_refuses_a_store_the_cluster_cannot_reach(kfp_api, local_settings):
    store = open_store(local_settings)
    req = RunRequest(spec=load_spec(SPEC), store_uri=store.uri, end="2012-01-01")
    with pytest.raises(ConfigError, match="the cluster cannot use the store"):
        submit(req, store, kfp_api.host, "driftloop", "bike-manual")
    assert kfp_api.runs == []


def test_a_spec_mistake_fails_before_anything_is_uploaded_or_run(kfp_api, s3_store):
    from driftloop.errors import DataError

    spec = load_spec(SPEC)
    wrong = spec.model_copy(update={"numeric": [*spec.numeric, "temperature"]})
    req = RunRequest(spec=wrong, store_uri=s3_store.uri, end="2012-01-01")
    with pytest.raises(DataError, match=r"column\(s\) \['temperature'\] named in the spec"):
        submit(req, s3_store, kfp_api.host, "driftloop", "bike-manual")
    assert kfp_api.runs == [] and s3_store.list("datasets") == []


def test_kfp_backend_names_the_run_after_the_trigger_and_never_starts_it_twice(kfp_api, s3_store):
    store = s3_store
    backend = KfpBackend(host=kfp_api.host, spec_path=str(SPEC), store=store)
    log = TriggerLog(store, "bike-sharing")
    trig = TriggerRecord(
        id=trigger_id("bike-sharing", "2012-02-01"),
        model="bike-sharing",
        version=1,
        reason=["drift"],
        window={"start": "2012-01-01", "end": "2012-02-01"},
        evidence={},
        train_window={"start": "2011-08-01", "end": "2012-02-01"},
    )
    log.create(trig)
    started = fire(log, trig, backend)
    assert started.status == "running" and started.run_id == "r1"
    run = kfp_api.runs[0]
    assert run["display_name"] == f"bike-sharing-{trig.id}-1"
    assert run["runtime_config"]["parameters"]["trigger_id"] == trig.id
    assert run["runtime_config"]["parameters"]["start"] == "2011-08-01"
    # The job died after creating the run but before recording it: the record still says
    # "pending" (attempt 1). The next job resumes the attempt and finds the run by name.
    crashed = log.get(trig.id).model_copy(update={"status": "pending", "run_id": ""})
    log.save(crashed)
    assert log.retryable() is not None and log.retryable().id == trig.id
    again = fire(log, log.get(trig.id), backend)
    assert again.run_id == "r1" and again.attempts == 1 and len(kfp_api.runs) == 1
    # A run that fails is retried under the same trigger id as a new attempt: a new run.
    kfp_api.runs[0]["state"] = "FAILED"
    reconcile(log, backend)
    failed = log.get(trig.id)
    assert failed.status == "failed" and failed.outcome == "failed before the gate"
    retried = fire(log, log.retryable(), backend)
    assert retried.run_name == f"bike-sharing-{trig.id}-2" and len(kfp_api.runs) == 2
    kfp_api.runs[1]["state"] = "SUCCEEDED"
    reconcile(log, backend)
    assert log.get(trig.id).status == "succeeded" and log.held() is None
