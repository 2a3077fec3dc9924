"""Promotion to the InferenceService through the real ``kubernetes`` client, against a fake
Kubernetes API on 127.0.0.1 (tests/fake_kube.py), on both store backends.

    .venv/bin/python -m pytest -q tests/driftloop/test_deploy.py
"""

import pytest
from kubernetes.client import Configuration

from driftloop.cli import main
from driftloop.deploy import DeployError, connect, deploy, rollback, version_uri
from driftloop.errors import ConfigError, RegistryError
from driftloop.formats import Lineage
from driftloop.registry import Registry, VersionRef
from tests.fake_kube import FakeKube

MERGE = "application/merge-patch+json"


@pytest.fixture
def kube():
    fake = FakeKube()
    yield fake
    fake.close()


def _two_versions(store, tmp_path):
    """Model ``m`` with versions 1 and 2 (tiny fake files); production = 1."""
    reg = Registry(store)
    for tag in ("a", "b"):
        d = tmp_path / f"v-{tag}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights-" + tag.encode())
        reg.register("m", d, Lineage(run_id=tag), "tabular-torch")
    reg.promote("m", 1)
    return reg


@pytest.fixture
def registry(store, tmp_path):
    return _two_versions(store, tmp_path)


@pytest.fixture
def local_registry(local_settings, tmp_path):
    from driftloop.store import open_store

    return _two_versions(open_store(local_settings), tmp_path)


def _uri(reg, version):
    return version_uri(reg.store.uri, VersionRef("m", version))


def _deploy(kube, reg, version, canary, **kw):
    with connect(Configuration(host=kube.host), "m") as isvc:
        return deploy(reg, isvc, version, canary, timeout=kw.get("timeout", 5), poll=0.01)


def test_canary_then_promote_then_alias(kube, registry):
    kube.add_isvc("m", _uri(registry, 1))
    aliases_at_patch = []  # the production alias each time the cluster was patched
    kube.on_request = lambda r: (
        r.method == "PATCH" and aliases_at_patch.append(registry.alias("m", "production"))
    )

    done = _deploy(kube, registry, 2, canary=10)

    assert kube.patches() == [
        {
            "spec": {
                "predictor": {
                    "model": {"storageUri": _uri(registry, 2)},
                    "canaryTrafficPercent": 10,
                }
            }
        },
        {"spec": {"predictor": {"canaryTrafficPercent": 100}}},
    ]
    assert {r.content_type for r in kube.requests if r.method == "PATCH"} == {MERGE}
    assert all(
        r.path == "/apis/serving.kserve.io/v1beta1/namespaces/driftloop/inferenceservices/m"
        for r in kube.requests
    )
    # The alias moved only after both patches, once all traffic was on the new revision.
    assert aliases_at_patch == [1, 1]
    assert (registry.alias("m", "production"), registry.alias("m", "previous")) == (2, 1)
    status = kube.isvc("m")["status"]["components"]["predictor"]
    assert done.revision == "m-predictor-00002"
    assert status["traffic"] == [
        {"revisionName": "m-predictor-00002", "latestRevision": True, "percent": 100}
    ]
    # The merge patch kept the fields it did not name.
    assert kube.isvc("m")["spec"]["predictor"]["model"]["runtime"] == "driftloop"


def test_without_canary_one_patch(kube, registry):
    kube.add_isvc("m", _uri(registry, 1))
    _deploy(kube, registry, 2, canary=100)
    assert kube.patches() == [
        {
            "spec": {
                "predictor": {
                    "model": {"storageUri": _uri(registry, 2)},
                    "canaryTrafficPercent": 100,
                }
            }
        }
    ]
    assert registry.alias("m", "production") == 2


def test_version_already_named_is_only_recorded(kube, registry):
    kube.add_isvc("m", _uri(registry, 2))  # e.g. the first version the manifests name
    done = _deploy(kube, registry, 2, canary=10)
    assert kube.patches() == [] and done.revision == "m-predictor-00001"
    assert registry.alias("m", "production") == 2


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("stuck", "timed out after 0.2s waiting for the canary of v2 to become ready"),
        ("failing", "failed: RevisionFailed: Revision failed: storage-initializer exited 1"),
    ],
)
def test_canary_not_ready_is_rolled_back_and_alias_stays(kube, registry, mode, message):
    kube.add_isvc("m", _uri(registry, 1))
    kube.revisions = mode
    with pytest.raises(DeployError) as err:
        _deploy(kube, registry, 2, canary=10, timeout=0.2)
    assert message in str(err.value)
    assert "rolled back to " + _uri(registry, 1) in str(err.value)
    assert kube.patches() == [
        {
            "spec": {
                "predictor": {
                    "model": {"storageUri": _uri(registry, 2)},
                    "canaryTrafficPercent": 10,
                }
            }
        },
        {
            "spec": {
                "predictor": {"model": {"storageUri": _uri(registry, 1)}, "canaryTrafficPercent": 0}
            }
        },
    ]
    assert kube.isvc("m")["spec"]["predictor"]["model"]["storageUri"] == _uri(registry, 1)
    assert (registry.alias("m", "production"), registry.alias("m", "previous")) == (1, None)


def test_rollback_patches_previous_version_then_swaps_aliases(kube, registry):
    registry.promote("m", 2)
    kube.add_isvc("m", _uri(registry, 2))
    with connect(Configuration(host=kube.host), "m") as isvc:
        assert rollback(registry, isvc) == 1
    assert kube.patches() == [
        {
            "spec": {
                "predictor": {
                    "model": {"storageUri": _uri(registry, 1)},
                    "canaryTrafficPercent": 100,
                }
            }
        }
    ]
    assert kube.requests[0].content_type == MERGE
    assert (registry.alias("m", "production"), registry.alias("m", "previous")) == (1, 2)


def test_rollback_without_previous_is_refused(kube, registry):
    kube.add_isvc("m", _uri(registry, 1))
    with (
        connect(Configuration(host=kube.host), "m") as isvc,
        pytest.raises(RegistryError, match="no previous version"),
    ):
        rollback(registry, isvc)
    assert kube.requests == []


def test_uncommitted_version_is_refused_before_any_request(kube, registry):
    # A crashed registration: claimed and half-written, never COMMITTED.
    registry.store.create("models/m/versions/3/CLAIM", b"")
    registry.store.put("models/m/versions/3/model.safetensors", b"partial")
    kube.add_isvc("m", _uri(registry, 1))
    with pytest.raises(RegistryError, match="cannot deploy m v3: not a committed version"):
        _deploy(kube, registry, 3, canary=10)
    assert kube.requests == []  # not even read: refused before the cluster is touched
    assert registry.alias("m", "production") == 1


def test_missing_inference_service_is_one_clear_error(kube, registry):
    with (
        connect(Configuration(host=kube.host), "m", namespace="elsewhere") as isvc,
        pytest.raises(ConfigError) as err,
    ):
        deploy(registry, isvc, 2, 10, timeout=1, poll=0.01)
    assert str(err.value) == (
        "InferenceService elsewhere/m does not exist: apply manifests/ or pass --isvc/--namespace"
    )
    assert [r.method for r in kube.requests] == ["GET"]
    assert registry.alias("m", "production") == 1


# -- the CLI from a laptop: a kubeconfig pointing at the fake -------------------------------
@pytest.fixture
def kubeconfig(kube, tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{kube.host}"}}}}]
users: [{{name: me, user: {{token: t0k3n}}}}]
contexts: [{{name: lab, context: {{cluster: fake, user: me}}}}]
current-context: lab
""")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def _cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out.strip().splitlines(), out.err.strip().splitlines()


def test_cli_promote_and_rollback_with_kube(kube, local_registry, kubeconfig, capsys):
    registry = local_registry
    kube.add_isvc("bike", _uri(registry, 1))
    kube.ready_after = 1  # ready at the first look: the CLI polls every 5 s
    store = registry.store.uri
    code, out, err = _cli(
        capsys,
        "--store",
        store,
        "models",
        "promote",
        "m",
        "2",
        "--kube",
        "--context",
        "lab",
        "--isvc",
        "bike",
        "--canary",
        "25",
    )
    assert (code, err) == (0, []) and out[-1].endswith("production -> v2")
    assert [p["spec"]["predictor"].get("canaryTrafficPercent") for p in kube.patches()] == [25, 100]
    assert kube.requests[0].path.endswith("/namespaces/driftloop/inferenceservices/bike")
    code, out, err = _cli(
        capsys, "--store", store, "models", "rollback", "m", "--kube", "--isvc", "bike"
    )
    assert (code, err) == (0, []) and "production -> v1 (rolled back)" in out[-1]
    assert kube.patches()[-1] == {
        "spec": {
            "predictor": {"model": {"storageUri": _uri(registry, 1)}, "canaryTrafficPercent": 100}
        }
    }
    # Not found: one line on stderr, exit 1, registry untouched.
    code, out, err = _cli(
        capsys, "--store", store, "models", "promote", "m", "2", "--kube", "--isvc", "nope"
    )
    assert code == 1 and err == [
        "driftloop: error: InferenceService driftloop/nope does not "
        "exist: apply manifests/ or pass --isvc/--namespace"
    ]
    assert registry.alias("m", "production") == 1


def test_cli_without_kube_moves_only_the_alias(kube, local_registry, kubeconfig, capsys):
    registry = local_registry
    code, out, _ = _cli(capsys, "--store", registry.store.uri, "models", "promote", "m", "2")
    assert code == 0 and out == ["m: production -> v2"]
    code, out, _ = _cli(capsys, "--store", registry.store.uri, "models", "rollback", "m")
    assert code == 0 and out == ["m: production -> v1 (rolled back)"]
    assert kube.requests == []
