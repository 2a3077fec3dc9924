"""The committed pipeline package: fresh, on the project image, installing nothing."""

import yaml

from driftloop.image import IMAGE
from pipelines.run import COMPILED, compile_pipeline


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def test_compiled_pipeline_is_not_stale(tmp_path):
    # Compare documents, not text: the header comment prints protobuf maps in hash order.
    fresh = compile_pipeline(tmp_path / "fresh.yaml")
    assert _docs(fresh) == _docs(COMPILED), (
        "pipelines/training_pipeline.yaml is stale: run `driftloop pipeline compile`")


def test_every_executor_runs_the_project_image_and_installs_nothing():
    spec = _docs(COMPILED)[0]
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 8
    for name, ex in executors.items():
        c = ex["container"]
        assert c["image"] == IMAGE, name
        text = " ".join(c.get("command", []) + c.get("args", []))
        assert "pip install" not in text and "pip3 install" not in text, name


def test_parameters_and_cluster_wiring():
    docs = _docs(COMPILED)
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"spec_yaml", "store_uri", "start", "end", "trials", "margin",
                           "promote", "trigger_id"}
    assert len(params["trials"]["defaultValue"]) == 4
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("exec-ingest", "exec-gate", "exec-register"):
        assert platform[step]["secretAsEnv"][0]["secretName"] == "driftloop-s3"
