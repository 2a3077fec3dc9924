"""Promote a registered version to the KServe InferenceService, canary first; roll back.

    driftloop models promote bike-sharing 7 --kube --canary 10     (a laptop, kubeconfig)
    components/deploy.py                                          (a pipeline pod, in-cluster)

Both call ``deploy`` / ``rollback`` here with a ``kubernetes.client.Configuration``; tests
pass one whose host is a fake API server (tests/fake_kube.py). Every change is one JSON
merge patch (``application/merge-patch+json``) of ``spec.predictor`` — the only fields the
``driftloop-pipeline`` Role may touch (manifests/base/pipeline-rbac.yaml: get, patch).

KServe semantics relied on (Serverless/Knative mode; kserve docs "Canary Rollout Strategy",
kserve.github.io/website/docs/model-serving/predictive-inference/rollout-strategies/canary;
kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go ``PropagateStatus`` and
pkg/controller/.../reconcilers/knative/ksvc_reconciler.go ``createKnativeService``):

- Changing ``storageUri`` creates a new Knative revision; ``canaryTrafficPercent: p`` sends
  p % to the latest *ready* revision and the rest (tag ``prev``) to the last revision
  rolled out at 100 % — so a canary that never gets ready never receives traffic.
- ``status.components.predictor``: ``latestCreatedRevision`` is the revision of the newest
  spec, ``latestReadyRevision`` the newest ready one, ``traffic`` the resolved split
  (each target has ``revisionName`` and ``percent``).
- ``canaryTrafficPercent: 100`` promotes; ``0`` pins all traffic back to the previous
  rolled-out revision at once (the docs' rollback).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from driftloop.errors import ConfigError, DeployError, DriftloopError, RegistryError
from driftloop.registry import Registry, VersionRef

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAMESPACE = "driftloop"  # serving, monitoring and pipeline pods share it (docs/cluster.md)
FIELD_MANAGER = "driftloop"  # shows who owns storageUri in managedFields


# -- connecting ------------------------------------------------------------------------------
def kube_config(in_cluster: bool = False, context: str | None = None):
    """A client Configuration: the pod's service account inside the cluster, else the
    kubeconfig ($KUBECONFIG or ~/.kube/config) and its current or named context."""
    import os

    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
        else:
            # The client reads $KUBECONFIG once, at import; read it now like kubectl does.
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                context=context,
                client_configuration=cfg,
            )
    except config.ConfigException as e:
        where = "in-cluster service account" if in_cluster else "kubeconfig"
        raise ConfigError(f"cannot load the Kubernetes {where}: {e}") from e
    return cfg


@dataclass
class InferenceService:
    """One InferenceService through the Kubernetes API; ``name`` defaults to the model."""

    api: Any  # kubernetes.client.CustomObjectsApi
    model: str
    name: str = ""
    namespace: str = NAMESPACE

    def __post_init__(self) -> None:
        self.name = self.name or self.model

    def __str__(self) -> str:
        return f"InferenceService {self.namespace}/{self.name}"

    def get(self) -> dict:
        return self._call("read", self.api.get_namespaced_custom_object)

    def patch(self, body: dict) -> dict:
        # CustomObjectsApi sends a dict body as application/merge-patch+json (RFC 7386):
        # nested maps merge, so only the fields named here change.
        return self._call(
            "patch", self.api.patch_namespaced_custom_object, body=body, field_manager=FIELD_MANAGER
        )

    def _call(self, verb: str, fn, **kw: Any) -> dict:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return dict(fn(GROUP, VERSION, self.namespace, PLURAL, self.name, **kw))
        except ApiException as e:
            if e.status == 404:
                raise ConfigError(
                    f"{self} does not exist: apply manifests/ or pass --isvc/--namespace"
                ) from e
            if e.status in (401, 403):
                raise ConfigError(
                    f"not allowed to {verb} {self} (HTTP {e.status}): check the "
                    "credentials / the driftloop-deploy Role"
                ) from e
            raise DeployError(f"cannot {verb} {self}: HTTP {e.status} {e.reason}") from e
        except HTTPError as e:
            raise DeployError(f"cannot {verb} {self}: {e}") from e


@contextlib.contextmanager
def connect(
    configuration: Any, model: str, name: str = "", namespace: str = NAMESPACE
) -> Iterator[InferenceService]:
    """An InferenceService handle whose API client is closed afterwards (its thread pool
    and the urllib3 pool that holds the sockets)."""
    from kubernetes import client

    api = client.ApiClient(configuration)
    try:
        yield InferenceService(client.CustomObjectsApi(api), model, name, namespace)
    finally:
        api.close()
        api.rest_client.pool_manager.clear()


# -- reading the InferenceService ----------------------------------------------------------
def version_uri(store_uri: str, ref: VersionRef) -> str:
    """What storageUri names: the version directory KServe's storage initializer copies."""
    return f"{store_uri.rstrip('/')}/{ref.prefix}"


def _predictor(obj: dict) -> tuple[dict, dict]:
    """(spec.predictor, status.components.predictor) of an InferenceService."""
    status = (obj.get("status") or {}).get("components", {}).get("predictor") or {}
    return obj.get("spec", {}).get("predictor", {}), status


def _condition(obj: dict, kind: str) -> dict:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == kind), {})


def _canary_state(obj: dict, before: str | None) -> tuple[str | None, str]:
    """(the new revision once it is ready, why it failed or "") for the spec we patched."""
    _, st = _predictor(obj)
    created = st.get("latestCreatedRevision")
    if not created or created == before:
        return None, ""  # the controller has not made our revision yet
    if (
        st.get("latestReadyRevision") == created
        and _condition(obj, "Ready").get("status") == "True"
    ):
        return created, ""
    # Knative marks the configuration False when the latest revision fails (image pull,
    # storage initializer, crash loop); KServe copies that to PredictorConfigurationReady.
    cfg = _condition(obj, "PredictorConfigurationReady")
    if cfg.get("status") == "False":
        return None, f"{cfg.get('reason', '')}: {cfg.get('message', '')}".strip(": ")
    if (obj.get("status") or {}).get("modelStatus", {}).get(
        "transitionStatus"
    ) == "BlockedByFailedLoad":
        return None, "the model failed to load (modelStatus BlockedByFailedLoad)"
    return None, ""


def _serves(obj: dict, revision: str) -> bool:
    """All traffic on ``revision`` and the InferenceService Ready."""
    _, st = _predictor(obj)
    share = sum(
        int(t.get("percent") or 0)
        for t in st.get("traffic") or []
        if t.get("revisionName") == revision
    )
    return share == 100 and _condition(obj, "Ready").get("status") == "True"


def _settled(obj: dict) -> tuple[str | None, str]:
    """(the revision of the current spec once it is ready and takes all traffic, "")."""
    _, st = _predictor(obj)
    created = st.get("latestCreatedRevision")
    done = created and st.get("latestReadyRevision") == created and _serves(obj, created)
    return (created if done else None), ""


# -- promoting and rolling back ------------------------------------------------------------
@dataclass(frozen=True)
class Deployed:
    version: int
    storage_uri: str
    revision: str  # the Knative revision now serving it


def deploy(
    registry: Registry,
    isvc: InferenceService,
    version: int,
    canary_percent: int = 100,
    timeout: float = 900.0,
    poll: float = 5.0,
) -> Deployed:
    """Serve ``version`` of ``isvc.model``, canary first when ``canary_percent`` < 100, then
    move the registry's production alias. On failure the InferenceService is patched back
    (canary 0 %, previous storageUri), the alias stays and DeployError says why.

    ``timeout`` bounds each wait (canary ready, then all traffic on it). The default is
    above Knative's 600 s progress deadline, so a stuck revision is reported as failed
    by Knative itself before we give up.
    """
    ref = VersionRef(isvc.model, version)
    # 1. Refuse what the registry does not hold before touching the cluster.
    if not registry.is_committed(ref):
        raise RegistryError(
            f"cannot deploy {ref.model} v{version}: not a committed version in {registry.store.uri}"
        )
    if not 0 < canary_percent <= 100:
        raise ConfigError(f"canary percent must be in 1..100, not {canary_percent}")
    target = version_uri(registry.store.uri, ref)

    # 2. Read what is served now: the rollback target and the revision to tell apart.
    current = isvc.get()
    spec, st = _predictor(current)
    previous_uri = spec.get("model", {}).get("storageUri")
    if previous_uri == target:
        # Already named (a rerun, or the first version the manifests point at): no new
        # revision to canary; make sure it takes all traffic and is ready, then record it.
        if spec.get("canaryTrafficPercent", 100) != 100:
            isvc.patch({"spec": {"predictor": {"canaryTrafficPercent": 100}}})
        revision = _wait(isvc, _settled, timeout, poll, f"v{version} to be ready")
        registry.promote(ref.model, version, reason=f"served by {isvc} ({revision})")
        return Deployed(version, target, revision)

    # 3. The canary: new storageUri -> new revision, p % of traffic once it is ready.
    isvc.patch(
        {
            "spec": {
                "predictor": {
                    "model": {"storageUri": target},
                    "canaryTrafficPercent": canary_percent,
                }
            }
        }
    )
    try:
        revision = _wait(
            isvc,
            lambda o: _canary_state(o, st.get("latestCreatedRevision")),
            timeout,
            poll,
            f"the canary of v{version} to become ready",
        )
        # 4. Promote: all traffic to the canary revision, and wait until it is so.
        if canary_percent < 100:
            isvc.patch({"spec": {"predictor": {"canaryTrafficPercent": 100}}})
        _wait(
            isvc,
            lambda o: (revision if _serves(o, revision) else None, ""),
            timeout,
            poll,
            f"{revision} to take all traffic",
        )
    except DriftloopError as e:
        _undo(isvc, previous_uri, e)
        raise
    # 5. Only now, with the cluster serving it, does the registry call it production.
    registry.promote(ref.model, version, reason=f"served by {isvc} ({revision})")
    return Deployed(version, target, revision)


def _wait(
    isvc: InferenceService,
    check,
    timeout: float,
    poll: float,
    what: str,
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        done, failed = check(isvc.get())
        if done:
            return str(done)
        if failed:
            raise DeployError(f"{isvc}: {what} failed: {failed}")
        if time.monotonic() >= deadline:
            raise DeployError(f"{isvc}: timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def _undo(isvc: InferenceService, previous_uri: str | None, cause: DriftloopError) -> None:
    """Send all traffic back to the last rolled-out revision (canary 0 %) and restore the
    previous storageUri, so the spec again names what is served."""
    try:
        isvc.patch(
            {
                "spec": {
                    "predictor": {"model": {"storageUri": previous_uri}, "canaryTrafficPercent": 0}
                }
            }
        )
    except DriftloopError as e:
        cause.args = (
            f"{cause}; rolling back also failed: {e} — run "
            f"`driftloop models rollback {isvc.model} --kube` or patch it by hand",
        )
        return
    cause.args = (
        f"{cause}; rolled back to {previous_uri} (canaryTrafficPercent 0), "
        "the production alias did not move",
    )


def rollback(registry: Registry, isvc: InferenceService) -> int:
    """Serve the registry's previous version again (all traffic), then swap the aliases.
    Returns the restored version. No wait: the previous version was already served."""
    model = isvc.model
    prev = registry.alias(model, "previous")
    if prev is None:
        raise RegistryError(f"model {model!r} has no previous version to roll back to")
    uri = version_uri(registry.store.uri, VersionRef(model, prev))
    isvc.patch({"spec": {"predictor": {"model": {"storageUri": uri}, "canaryTrafficPercent": 100}}})
    return registry.rollback(model)
