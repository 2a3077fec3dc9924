"""Broken copies of the manifests: the checks must fail and name the file, object and field."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.manifests import checks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of manifests/ to break; returns the copy's root."""
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def problems(tree: Path, overlay: str = "dev") -> str:
    found = checks.problems(tree / "manifests" / "overlays" / overlay)
    assert found, "the broken copy passed every check"
    return "\n".join(found)


def test_unchanged_copy_passes(tree):
    assert checks.problems(tree / "manifests" / "overlays" / "dev") == []


def test_malformed_overlay_names_the_overlay_and_the_missing_file(tree):
    edit(
        tree / "manifests/overlays/dev/kustomization.yaml",
        "  - ../../components/minio\n",
        "  - ../../components/minoi\n",
    )
    with pytest.raises(checks.ManifestError) as e:
        checks.build(tree / "manifests" / "overlays" / "dev")
    assert "manifests/overlays/dev: kustomize build failed" in str(e.value)
    assert "components/minoi" in str(e.value)


def test_yaml_syntax_error_names_the_file(tree):
    edit(tree / "manifests/base/collector.yaml", "  replicas: 2\n", "  replicas: [2\n")
    with pytest.raises(checks.ManifestError) as e:
        checks.build(tree / "manifests" / "overlays" / "prod")
    assert "collector.yaml" in str(e.value)


def test_missing_image_tag_names_every_container_and_the_field(tree):
    edit(tree / "manifests/overlays/dev/kustomization.yaml", '    newTag: "0.1.0"\n', "")
    msg = problems(tree)
    assert (
        "manifests/base/collector.yaml Deployment/driftloop-collector: "
        "spec.template.spec.containers[collector].image: 'ghcr.io/driftloop/driftloop' has no tag"
    ) in msg
    assert (
        "CronJob/driftloop-drift: spec.jobTemplate.spec.template.spec.containers[drift].image"
        in msg
    )
    assert "ServingRuntime/driftloop: spec.containers[kserve-container].image" in msg


def test_wrong_project_tag_is_refused(tree):
    edit(tree / "manifests/overlays/prod/kustomization.yaml", 'newTag: "0.1.0"', 'newTag: "0.0.9"')
    assert "'ghcr.io/driftloop/driftloop:0.0.9' is not the project image" in problems(tree, "prod")


def test_kubernetes_schema_failure_names_object_and_field(tree):
    edit(tree / "manifests/base/collector.yaml", "  replicas: 2\n", '  replicas: "one"\n')
    assert (
        "manifests/base/collector.yaml Deployment/driftloop-collector: spec.replicas: "
        "'one' is not of type 'integer'"
    ) in problems(tree)


def test_unknown_kubernetes_field_is_refused(tree):
    edit(tree / "manifests/base/drift-job.yaml", "concurrencyPolicy:", "concurrencyPolicey:")
    msg = problems(tree)
    assert "CronJob/driftloop-drift: spec:" in msg and "concurrencyPolicey" in msg


def test_inference_service_schema_failure_names_object_and_field(tree):
    edit(
        tree / "manifests/base/serving.yaml",
        "    minReplicas: 1\n",
        "    minReplicas: 1\n    scaleMetric: everything\n",
    )
    assert (
        "manifests/base/serving.yaml InferenceService/bike-sharing: spec.predictor.scaleMetric: "
        "'everything' is not one of"
    ) in problems(tree)


def test_inference_service_reports_every_schema_failure(tree):
    edit(tree / "manifests/base/serving.yaml", "modelFormat:", "modelFormats:")
    edit(tree / "manifests/base/serving.yaml", "minReplicas: 1", "minReplicas: one")
    msg = problems(tree)
    assert (
        "InferenceService/bike-sharing: spec.predictor.model: Additional properties are not "
        "allowed ('modelFormats' was unexpected)"
    ) in msg
    assert "InferenceService/bike-sharing: spec.predictor.minReplicas: 'one' is not of type" in msg


def test_serving_runtime_schema_failure(tree):
    edit(tree / "manifests/base/serving.yaml", "autoSelect: true", "autoSelect: yes-please")
    assert (
        "ServingRuntime/driftloop: spec.supportedModelFormats[0].autoSelect: "
        "'yes-please' is not of type 'boolean'"
    ) in problems(tree)


def test_writable_root_filesystem_is_refused(tree):
    edit(
        tree / "manifests/base/collector.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
    )
    assert (
        "Deployment/driftloop-collector: spec.template.spec.containers[collector]"
        ".securityContext.readOnlyRootFilesystem: want True"
    ) in problems(tree)


def test_missing_limits_and_seccomp_are_refused(tree):
    edit(
        tree / "manifests/base/drift-job.yaml",
        '                limits: {cpu: "2", memory: 2Gi}\n',
        "",
    )
    edit(
        tree / "manifests/base/drift-job.yaml",
        "            seccompProfile: {type: RuntimeDefault}\n",
        "",
    )
    msg = problems(tree)
    assert "containers[drift].resources.limits.memory: missing" in msg
    assert "spec.jobTemplate.spec.template.spec.securityContext.seccompProfile.type" in msg


def test_logger_url_to_a_wrong_port_is_refused(tree):
    edit(
        tree / "manifests/base/serving.yaml",
        "- http://driftloop-collector.driftloop.svc.cluster.local/",
        "- http://driftloop-collector.driftloop.svc.cluster.local:8080/",
    )
    assert (
        "InferenceService/bike-sharing: spec.predictor.containers[kserve-container].args "
        "--logger_url: 'http://driftloop-collector.driftloop.svc.cluster.local:8080/' reaches "
        "no Service port"
    ) in problems(tree)


# --- who may write to the collector --------------------------------------------------------

TOKEN_ARGS = ",\n                 --token-file, /var/run/secrets/driftloop/collector/token]"
COLLECTOR = "Deployment/driftloop-collector: spec.template.spec.containers[collector].args"
PREDICTOR = "InferenceService/bike-sharing: spec.predictor.containers[kserve-container].args"


def test_collector_without_a_token_file_is_refused(tree):
    edit(tree / "manifests/base/collector.yaml", TOKEN_ARGS, "]")
    msg = problems(tree)
    assert (
        f"manifests/base/collector.yaml {COLLECTOR} --token-file: missing: "
        "monitoring.collector accepts posts from anyone without a token"
    ) in msg


def test_collector_admitting_open_events_is_refused(tree):
    edit(
        tree / "manifests/base/collector.yaml",
        TOKEN_ARGS,
        TOKEN_ARGS.replace("]", ", --open-events]"),
    )
    assert f"{COLLECTOR} --open-events: admits events without a token" in problems(tree, "prod")


def test_predictor_emitting_without_a_token_file_is_refused(tree):
    edit(
        tree / "manifests/base/serving.yaml",
        "        - --logger_token_file\n        - /var/run/secrets/driftloop/collector/token\n",
        "",
    )
    assert f"{PREDICTOR} --logger_token_file: missing: serving emits without a token" in problems(
        tree
    )


def test_token_file_outside_the_mounted_secret_is_refused(tree):
    edit(
        tree / "manifests/base/serving.yaml",
        "        - /var/run/secrets/driftloop/collector/token\n",
        "        - /tmp/token\n",
    )
    assert (
        f"{PREDICTOR} --logger_token_file: /tmp/token is no key of a Secret mounted read-only"
    ) in problems(tree)


def test_collector_and_predictor_on_different_secrets_are_refused(tree):
    edit(
        tree / "manifests/base/collector.yaml",
        "            secretName: driftloop-collector-token\n",
        "            secretName: other-token\n",
    )
    msg = problems(tree)
    assert "collector token: the collector and the predictors disagree" in msg
    assert "Secret 'other-token' key 'token': Deployment/driftloop-collector" in msg


def test_kserve_logger_is_refused(tree):
    edit(
        tree / "manifests/base/serving.yaml",
        "    minReplicas: 1\n",
        "    minReplicas: 1\n    logger: {mode: all, url: http://driftloop-collector}\n",
    )
    assert (
        "manifests/base/serving.yaml InferenceService/bike-sharing: spec.predictor.logger: "
        "KServe's logger sends no Authorization header"
    ) in problems(tree)


def test_service_selecting_nothing_is_refused(tree):
    edit(
        tree / "manifests/base/collector.yaml",
        "  selector:\n    app.kubernetes.io/name: driftloop-collector\n",
        "  selector:\n    app.kubernetes.io/name: collector\n",
    )
    assert "Service/driftloop-collector: spec.selector: " in problems(tree)


def test_unknown_service_account_is_refused(tree):
    edit(
        tree / "manifests/base/collector.yaml",
        "serviceAccountName: driftloop-collector",
        "serviceAccountName: collector",
    )
    assert (
        "Deployment/driftloop-collector: spec.template.spec.serviceAccountName: "
        "'collector' is not in the build"
    ) in problems(tree)


def test_wildcard_rbac_is_refused(tree):
    edit(tree / "manifests/base/pipeline-rbac.yaml", "verbs: [get, patch]", 'verbs: ["*"]')
    assert "Role/driftloop-deploy: rules[0].verbs: no wildcards" in problems(tree)


def test_store_settings_and_kserve_annotations_must_agree(tree):
    edit(
        tree / "manifests/overlays/prod/store.yaml",
        "DRIFTLOOP_S3_REGION: eu-west-1",
        "DRIFTLOOP_S3_REGION: us-west-2",
    )
    assert (
        "ServiceAccount/driftloop-models: metadata.annotations.serving.kserve.io/s3-region: "
        "'eu-west-1' disagrees with driftloop-settings ('us-west-2')"
    ) in problems(tree, "prod")


def test_setting_the_model_without_the_component_is_refused(tree):
    """Base ran the replacements before the overlay changed the name: nothing followed."""
    with (tree / "manifests/overlays/dev/kustomization.yaml").open("a") as f:
        f.write(
            "configMapGenerator:\n"
            "  - name: driftloop-model\n"
            "    behavior: merge\n"
            "    literals: [name=churn]\n"
        )
    msg = problems(tree)
    assert (
        "manifests/base/serving.yaml InferenceService/bike-sharing: metadata.name: "
        "'bike-sharing' is not the model driftloop-model names ('churn'): "
        "the overlay that sets it must include components/model-name"
    ) in msg
    assert "Role/driftloop-deploy: rules[0].resourceNames: 'bike-sharing' is not" in msg


def test_reordered_args_break_no_reference_silently(tree):
    """The replacement writes args by index: moving --model is caught, not deployed."""
    edit(
        tree / "manifests/base/drift-job.yaml",
        "args: [--model, MODEL, --trigger, kfp]",
        "args: [--trigger, kfp, --model, MODEL]",
    )
    assert (
        "CronJob/driftloop-drift: spec.jobTemplate.spec.template.spec.containers[drift].args "
        "--model: 'MODEL' is not the model driftloop-model names ('bike-sharing')"
    ) in problems(tree)


def test_collector_on_loopback_is_refused(tree):
    edit(tree / "manifests/base/collector.yaml", "args: [--host, 0.0.0.0, ", "args: [")
    assert (
        "manifests/base/collector.yaml Deployment/driftloop-collector: "
        "spec.template.spec.containers[collector].args: monitoring.collector binds 127.0.0.1 "
        "(its default 127.0.0.1): loopback only"
    ) in problems(tree)
    edit(tree / "manifests/base/collector.yaml", "args: [", "args: [--host=localhost, ")
    assert "monitoring.collector binds localhost (--host localhost)" in problems(tree)


def test_collector_may_bind_the_pod_ip_from_the_downward_api(tree):
    collector = tree / "manifests/base/collector.yaml"
    edit(collector, "args: [--host, 0.0.0.0, ", "args: [--host, $(POD_IP), ")
    edit(
        collector,
        "          env:\n",
        "          env:\n"
        "            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n",
    )
    objs = checks.build(tree / "manifests" / "overlays" / "dev")
    assert checks.check_listen_addresses(objs) == []
    (dep,) = checks.find(objs, "Deployment", "driftloop-collector")
    assert checks.listen_host(dep.obj["spec"]["template"]["spec"]["containers"][0]) == (
        "pod IP",
        "--host $(POD_IP)",
    )


def test_unknown_server_must_say_how_it_binds(tree):
    edit(
        tree / "manifests/base/drift-job.yaml",
        "              resources:\n",
        "              ports: [{containerPort: 9090}]\n              resources:\n",
    )
    assert (
        "CronJob/driftloop-drift: spec.jobTemplate.spec.template.spec.containers[drift].command: "
        "'monitoring.job' listens on a port, but checks.SERVERS does not say"
    ) in problems(tree)


def test_api_token_secret_env_and_pull_policy_come_back_named(tree):
    collector, drift = (
        tree / "manifests/base/collector.yaml",
        tree / "manifests/base/drift-job.yaml",
    )
    edit(collector, "      automountServiceAccountToken: false # talks to the store only\n", "")
    edit(collector, "imagePullPolicy: Always", "imagePullPolicy: IfNotPresent")
    edit(
        drift,
        "                    name: driftloop-settings\n",
        "                    name: driftloop-settings\n"
        "                - secretRef:\n"
        "                    name: driftloop-s3\n",
    )
    msg = problems(tree, "prod")
    assert (
        "manifests/base/collector.yaml Deployment/driftloop-collector: "
        "spec.template.spec.automountServiceAccountToken: want false: the pod gets an API token "
        "(CKV_K8S_38; or exempt the object: checkov.io/skip<N>: CKV_K8S_38=<why>)"
    ) in msg
    assert (
        "Deployment/driftloop-collector: spec.template.spec.containers[collector].imagePullPolicy: "
        "IfNotPresent: want Always for a tag (CKV_K8S_15;"
    ) in msg
    assert (
        "CronJob/driftloop-drift: spec.jobTemplate.spec.template.spec.containers[drift]"
        ".envFrom[1]: Secret 'driftloop-s3' as environment variables: mount it (CKV_K8S_35;"
    ) in msg


def test_an_exemption_needs_a_reason_checkov_can_read(tree):
    minio = tree / "manifests/components/minio/minio.yaml"
    minio.write_text(
        re.sub(
            r"checkov.io/skip1: >-\n(      .*\n)+?(?=spec:)",
            "checkov.io/skip1: CKV_K8S_43\n",
            minio.read_text(),
            count=1,
        )
    )
    edit(tree / "manifests/base/drift-job.yaml", "pulled Always instead", "imagePullPolicy=Always")
    msg = problems(tree)
    assert (
        "manifests/components/minio/minio.yaml Deployment/minio: "
        "metadata.annotations.checkov.io/skip1: exempts from CKV_K8S_43 without a reason"
    ) in msg
    assert "Deployment/minio: spec.template.spec.containers[minio].image: " in msg  # not exempt
    assert (
        "CronJob/driftloop-drift: metadata.annotations.checkov.io/skip1: "
        'the reason must not contain "="'
    ) in msg


def test_a_digest_is_pulled_if_not_present(tree):
    digest = "sha256:" + "0" * 64  # a test fixture, never a real image
    edit(
        tree / "manifests/overlays/prod/kustomization.yaml",
        'newTag: "0.1.0"',
        f"digest: {digest}",
    )
    msg = problems(tree, "prod")
    assert (
        "Deployment/driftloop-collector: spec.template.spec.containers[collector].imagePullPolicy: "
        "Always: want IfNotPresent for a digest"
    ) in msg
    assert "has no digest" not in msg


def with_grpc(tree: Path, overlay: str) -> None:
    edit(
        tree / f"manifests/overlays/{overlay}/kustomization.yaml",
        "components:\n",
        "components:\n  - ../../components/grpc\n",
    )


def test_grpc_component_exposes_h2c_in_standard_mode(tree):
    """components/grpc: REST and the h2c port, in Standard mode; every check passes."""
    with_grpc(tree, "dev")
    assert checks.problems(tree / "manifests" / "overlays" / "dev") == []
    objs = checks.build(tree / "manifests" / "overlays" / "dev")
    (runtime,) = checks.find(objs, "ServingRuntime", "driftloop")
    ports = runtime.obj["spec"]["containers"][0]["ports"]
    assert {"name": "h2c", "containerPort": 8081, "protocol": "TCP"} in ports
    assert "grpc-v2" in runtime.obj["spec"]["protocolVersions"]
    (isvc,) = checks.find(objs, "InferenceService")
    assert isvc.obj["metadata"]["annotations"][checks.MODE] == "Standard"


def test_two_ports_in_serverless_mode_are_refused(tree):
    edit(
        tree / "manifests/base/serving.yaml",
        "        - containerPort: 8080\n          protocol: TCP\n",
        "        - containerPort: 8080\n          protocol: TCP\n"
        "        - {name: grpc, containerPort: 8081, protocol: TCP}\n",
    )
    msg = problems(tree)
    assert "Knative" in msg and "2 ports" in msg and "components/grpc" in msg
    assert "'grpc': Knative allows only" in msg


def test_grpc_with_canary_is_refused(tree):
    with_grpc(tree, "prod")
    msg = problems(tree, "prod")
    assert "spec.predictor.canaryTrafficPercent" in msg and "do not combine" in msg


def test_grpc_bound_to_loopback_is_refused(tree):
    with_grpc(tree, "dev")
    edit(
        tree / "manifests/base/serving.yaml",
        '        - "8081"\n',
        '        - "8081"\n        - --grpc_host\n        - 127.0.0.1\n',
    )
    assert "the gRPC server binds 127.0.0.1" in problems(tree)
