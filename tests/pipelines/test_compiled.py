"""The committed pipeline package: fresh, on the project image, installing nothing."""

import yaml

from driftloop.image import IMAGE
from pipelines.run import COMPILED, compile_pipeline


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def _ours(docs):
    """The documents without `sdkVersion`: what we wrote, not which kfp patch compiled it."""
    return [{k: v for k, v in doc.items() if k != "sdkVersion"} for doc in docs]


def test_compiled_pipeline_is_not_stale(tmp_path):
    """The committed YAML is what compiling our pipeline gives today.

    The check is about our pipeline, not the SDK's patch number: the lock pins kfp exactly,
    so every install compiles alike, and `sdkVersion` (kfp-2.17.0 vs kfp-2.17.3, the only
    change such a release made) is left out of the comparison, so a kfp bump in the lock
    alone does not fail it, while any change to the spec kfp emits still does. Documents are
    compared, not text: the header comment prints protobuf maps in hash order.
    """
    fresh = compile_pipeline(tmp_path / "fresh.yaml")
    assert _ours(_docs(fresh)) == _ours(_docs(COMPILED)), (
        "pipelines/training_pipeline.yaml is stale: run `make compile`"
    )


def test_every_executor_runs_the_project_image_and_installs_nothing():
    spec = _docs(COMPILED)[0]
    executors = spec["deploymentSpec"]["executors"]
    # register twice (deploy off: it may promote; deploy on: never, the deploy step does)
    assert set(executors) == {
        f"exec-{s}"
        for s in (
            "ingest",
            "validate",
            "split",
            "baselines",
            "train",
            "evaluate",
            "gate",
            "refit",
            "register",
            "register-2",
            "deploy",
            "restore",  # when the gate refused: an earlier version it chose, if any
        )
    }
    for name, ex in executors.items():
        c = ex["container"]
        assert c["image"] == IMAGE, name
        text = " ".join(c.get("command", []) + c.get("args", []))
        assert "pip install" not in text and "pip3 install" not in text, name


def test_parameters_and_cluster_wiring():
    docs = _docs(COMPILED)
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {
        "spec_yaml",
        "store_uri",
        "start",
        "end",
        "trials",
        "margin",
        "promote",
        "trigger_id",
        "deploy",
        "canary_percent",
    }
    assert len(params["trials"]["defaultValue"]) == 5  # 2 LightGBM, 2 MLP, 1 warm start
    assert params["deploy"]["defaultValue"] is False  # opt-in: a cluster with KServe
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    steps = ("ingest", "train", "gate", "register", "register-2", "deploy", "restore")
    for step in (f"exec-{s}" for s in steps):
        assert platform[step]["secretAsEnv"][0]["secretName"] == "driftloop-s3"
        assert platform[step]["configMapAsEnv"][0]["configMapName"] == "driftloop-settings"


def test_deploy_runs_only_when_asked_and_after_an_unpromoted_register():
    spec = _docs(COMPILED)[0]
    assert spec["deploymentSpec"]["executors"]["exec-deploy"]["container"]["image"] == IMAGE
    tasks = {
        name: task
        for comp in spec["components"].values()
        for name, task in comp.get("dag", {}).get("tasks", {}).items()
    }
    deploy = tasks["deploy"]
    assert deploy["dependentTasks"] == ["register-2"]
    assert deploy["inputs"]["parameters"]["version"]["taskOutputParameter"] == {
        "producerTask": "register-2",
        "outputParameterKey": "Output",
    }
    assert tasks["register-2"]["inputs"]["parameters"]["promote"]["runtimeValue"] == {
        "constant": False
    }
    branches = {t["triggerPolicy"]["condition"] for t in tasks.values() if "triggerPolicy" in t}
    assert "inputs.parameter_values['pipelinechannel--deploy'] == false" in branches
    assert "!(inputs.parameter_values['pipelinechannel--deploy'] == false)" in branches
