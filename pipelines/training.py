"""The training pipeline: ingest -> validate -> split -> baselines + N trials (ParallelFor)
-> evaluate best -> gate -> refit on the whole window and register (only if the gate
passed) -> deploy (only if `deploy`: canary on the InferenceService, then promote, then the
production alias); if the gate refused, restore the earlier version it chose, if any.

Compile:  driftloop pipeline compile        (writes pipelines/training_pipeline.yaml)
Run:      driftloop pipeline run --local --spec data/bike_sharing.yaml
Submit:   driftloop pipeline submit --host URL --spec data/bike_sharing.yaml
"""

from kfp import dsl, kubernetes

from components.baselines import baselines
from components.deploy import deploy as deploy_step
from components.evaluate import evaluate
from components.gate import gate
from components.ingest import ingest
from components.refit import refit
from components.register import register
from components.restore import restore
from components.split import split
from components.train import train
from components.validate import validate
from driftloop.steps import default_trials

PIPELINE_NAME = "driftloop-training"
S3_SECRET = "driftloop-s3"  # keys AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (see manifests)
SETTINGS_CONFIGMAP = "driftloop-settings"  # DRIFTLOOP_* settings shared by every pod
ISVC_NAMESPACE = "driftloop"  # the pipeline pods' namespace too: the deploy Role is local
# Above Knative's 600 s progress deadline, so a revision that cannot start is reported
# failed by Knative (and rolled back by the step) before the step gives up waiting.
DEPLOY_TIMEOUT_SECONDS = 900


def _in_cluster(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Give a step the store settings and credentials when it runs on Kubernetes
    (ignored by the local runner, which inherits the caller's environment)."""
    kubernetes.use_config_map_as_env(
        task,
        SETTINGS_CONFIGMAP,
        config_map_key_to_env={
            "DRIFTLOOP_S3_ENDPOINT": "DRIFTLOOP_S3_ENDPOINT",
            "DRIFTLOOP_S3_SECURE": "DRIFTLOOP_S3_SECURE",
            "DRIFTLOOP_S3_REGION": "DRIFTLOOP_S3_REGION",
        },
    )
    kubernetes.use_secret_as_env(
        task,
        S3_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )
    return task


@dsl.pipeline(name=PIPELINE_NAME, description="Train, gate and register a model.")
def training_pipeline(
    spec_yaml: str,
    store_uri: str = "s3://driftloop/store",
    start: str = "",
    end: str = "",
    trials: list = default_trials("tabular", 4),  # noqa: B008 - {family, params}, sampled once
    margin: float = 0.0,
    promote: bool = True,
    trigger_id: str = "",
    deploy: bool = False,
    canary_percent: int = 10,
):
    ingested = _in_cluster(ingest(spec_yaml=spec_yaml, start=start, end=end))
    ingested.set_caching_options(False)  # the source may change under the same window
    checked = validate(spec_yaml=spec_yaml, dataset=ingested.outputs["dataset"])
    parts = split(spec_yaml=spec_yaml, dataset=ingested.outputs["dataset"]).after(checked)
    train_set, val_set, test_set = (parts.outputs[k] for k in ("train", "validation", "test"))

    base = baselines(spec_yaml=spec_yaml, train=train_set, validation=val_set, test=test_set)
    with dsl.ParallelFor(items=trials, parallelism=2) as candidate:
        trained = _in_cluster(  # a warm-started trial reads the production version
            train(
                spec_yaml=spec_yaml,
                trial=candidate,
                train=train_set,
                validation=val_set,
                store_uri=store_uri,
            )
        )
    best = evaluate(
        spec_yaml=spec_yaml,
        trials=dsl.Collected(trained.outputs["model"]),
        train=train_set,
        validation=val_set,
        test=test_set,
    )

    verdict = _in_cluster(
        gate(
            spec_yaml=spec_yaml,
            store_uri=store_uri,
            margin=margin,
            baselines=base.outputs["Output"],
            model=best.outputs["best"],
            train=train_set,
            validation=val_set,
            test=test_set,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            trigger_id=trigger_id,
        )
    )
    verdict.set_caching_options(False)  # the champion may have changed
    with dsl.If(verdict.outputs["Output"] == True):  # noqa: E712 - KFP condition syntax
        # The version serves the gated recipe trained on the whole window.
        refitted = refit(
            spec_yaml=spec_yaml, model=best.outputs["best"], dataset=ingested.outputs["dataset"]
        )
        registration = dict(
            spec_yaml=spec_yaml,
            store_uri=store_uri,
            start=start,
            end=end,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            trigger_id=trigger_id,
            dataset_sha256=ingested.outputs["sha256"],
            baselines=base.outputs["Output"],
            test_metrics=best.outputs["Output"],
            gate_report=verdict.outputs["report"],
            selected=best.outputs["best"],
            model=refitted.outputs["refitted"],
            dataset=ingested.outputs["dataset"],
            test=test_set,
        )
        # Conditions compare bools only: kfp.local skips float compares and resolves only
        # pipeline parameters or single `Output` outputs.
        with dsl.If(deploy == False):  # noqa: E712
            registered = _in_cluster(register(promote=promote, **registration))
            registered.set_caching_options(False)
        with dsl.Else():
            # Register without promoting (`promote` does not apply): the deploy step moves
            # the production alias only once the InferenceService serves the version, so a
            # failed canary leaves the alias on what is still served.
            unpromoted = _in_cluster(register(promote=False, **registration))
            unpromoted.set_caching_options(False)
            deployed = _in_cluster(
                deploy_step(
                    spec_yaml=spec_yaml,
                    store_uri=store_uri,
                    version=unpromoted.outputs["Output"],
                    isvc="",
                    namespace=ISVC_NAMESPACE,
                    canary_percent=canary_percent,
                    timeout_seconds=DEPLOY_TIMEOUT_SECONDS,
                )
            )
            deployed.set_caching_options(False)  # the cluster's state is not an input
    with dsl.Else():
        # Refused: an earlier version that beat the champion and the challenger on the
        # same window is served again (a no-op when the gate named none).
        restored = _in_cluster(
            restore(
                spec_yaml=spec_yaml,
                store_uri=store_uri,
                gate_report=verdict.outputs["report"],
                promote=promote,
                deploy=deploy,
                namespace=ISVC_NAMESPACE,
                canary_percent=canary_percent,
                timeout_seconds=DEPLOY_TIMEOUT_SECONDS,
            )
        )
        restored.set_caching_options(False)
