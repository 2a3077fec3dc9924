import re
import threading

import pytest
import yaml

from driftloop.errors import ConfigError, IntegrityError, NotFound, RegistryError
from driftloop.formats import Aliases, Lineage, Manifest, TabularSchema, VersionFiles
from driftloop.registry import Registry, VersionRef

FAMILY = "tabular-torch"


def _register(reg: Registry, d, run_id: str = "") -> VersionRef:
    return reg.register("m", d, Lineage(run_id=run_id), FAMILY)


def _version_dir(tmp_path, tag: str):
    d = tmp_path / f"v-{tag}"
    (d / "reference").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"weights-" + tag.encode())
    (d / "reference" / "sample.parquet").write_bytes(b"ref")
    return d


def test_register_writes_manifest_with_sha256_and_commits_last(store, tmp_path):
    reg = Registry(store)
    ref = _register(reg, _version_dir(tmp_path, "a"), "r1")
    assert ref == VersionRef("m", 1)
    man = reg.manifest(ref)
    assert set(man.files) == {"model.safetensors", "reference/sample.parquet"}
    assert man.lineage.run_id == "r1" and man.family == FAMILY
    # The stored manifest reads back as the same typed object.
    stored = store.get("models/m/versions/1/manifest.json")
    assert Manifest.parse(stored, "manifest") == man
    assert reg.read_file(ref, "model.safetensors") == b"weights-a"
    assert reg.versions("m") == [1] and reg.models() == ["m"]


def test_half_written_version_is_invisible_and_not_reused(store, tmp_path):
    reg = Registry(store)
    # A crash after the claim and some files but before COMMITTED:
    store.create("models/m/versions/1/CLAIM", b"")
    store.put("models/m/versions/1/model.safetensors", b"partial")
    assert reg.versions("m") == [] and reg.models() == []
    with pytest.raises(NotFound, match="no committed version 1"):
        reg.manifest(VersionRef("m", 1))
    assert _register(reg, _version_dir(tmp_path, "b")).version == 2
    with pytest.raises(RegistryError, match="not a committed version"):
        reg.promote("m", 1)


def test_tampered_file_is_refused(store, tmp_path):
    reg = Registry(store)
    ref = _register(reg, _version_dir(tmp_path, "a"))
    store.put(f"{ref.prefix}/model.safetensors", b"evil")
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        reg.download(ref, tmp_path / "out")
    # Promotion verifies every file first: a corrupt version never becomes production.
    with pytest.raises(RegistryError, match="cannot promote m v1: .*sha256 mismatch"):
        reg.promote("m", 1)
    assert reg.alias("m", "production") is None


def test_promote_and_rollback_are_single_alias_moves(store, tmp_path):
    reg = Registry(store)
    for tag in "abc":
        _register(reg, _version_dir(tmp_path, tag))
    with pytest.raises(RegistryError, match="no previous version"):
        reg.rollback("m")
    reg.promote("m", 1)
    reg.promote("m", 3)
    assert (reg.alias("m", "production"), reg.alias("m", "previous")) == (3, 1)
    assert reg.rollback("m") == 1
    assert (reg.alias("m", "production"), reg.alias("m", "previous")) == (1, 3)
    assert reg.resolve("m").version == 1
    with pytest.raises(NotFound, match="no 'production' alias"):
        reg.resolve("other")
    # Both pointers live in one object: one write moves them together.
    both = Aliases.parse(store.get("models/m/aliases.json"), "aliases")
    assert (both.production.version, both.previous.version) == (1, 3)
    assert [k for k in store.list("models/m") if "alias" in k] == ["models/m/aliases.json"]


def test_concurrent_registrations_get_distinct_versions(store, tmp_path):
    reg = Registry(store)
    dirs = [_version_dir(tmp_path, str(i)) for i in range(4)]
    refs: list[VersionRef] = []
    threads = [threading.Thread(target=lambda d=d: refs.append(_register(reg, d))) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.version for r in refs) == [1, 2, 3, 4]
    assert reg.versions("m") == [1, 2, 3, 4]


def test_a_version_of_an_unknown_family_is_never_promoted(store, tmp_path):
    reg = Registry(store)
    reg.register("m", _version_dir(tmp_path, "a"), Lineage(), "gbdt-from-the-future")
    with pytest.raises(ConfigError, match="m v1: unknown model family 'gbdt-from-the-future'"):
        reg.promote("m", 1)
    assert reg.alias("m", "production") is None


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/file", "a/../../b", "a\\b", "./x"])
def test_a_manifest_naming_a_file_outside_the_version_is_refused(store, tmp_path, name):
    reg = Registry(store)
    ref = _register(reg, _version_dir(tmp_path, "a"))
    key = f"{ref.prefix}/manifest.json"
    man = store.get_json(key)
    man["files"][name] = man["files"].pop("model.safetensors")
    store.put_json(key, man)
    with pytest.raises(IntegrityError, match="not a relative, normalised path"):
        reg.download(ref, tmp_path / "out")
    assert not (tmp_path / "etc").exists() and not list((tmp_path).glob("out/**/passwd"))


def _with_rules(tmp_path, tag: str, when: str, schema: bool = True):
    d = _version_dir(tmp_path, tag)
    if schema:
        s = TabularSchema.of_columns(["temp"], ["hr"], model="m")
        (d / VersionFiles.SCHEMA).write_bytes(s.dump())
    rules = {"rules": [{"name": "r", "when": when}]}
    (d / VersionFiles.RULES).write_text(yaml.safe_dump(rules))
    return d


@pytest.mark.parametrize(
    "when,message",
    [
        ("tmp > 1", "m v1/rules.yaml: rule 'r': unknown column 'tmp'"),
        ("temp + 1", "m v1/rules.yaml: rule 'r': must be a condition (true/false), not a number"),
        (
            "hr.__init__.__globals__.get('__builtins__').get('__import__').__self__"
            ".__import__('os').system('touch {canary}') == 0",
            "m v1/rules.yaml: rule 'r': attribute access is not allowed: `hr.__init__`",
        ),
    ],
)
def test_a_version_whose_rules_do_not_compile_against_its_schema_is_never_promoted(
    store, tmp_path, when, message
):
    canary = tmp_path / "canary"
    reg = Registry(store)
    ref = _register(reg, _with_rules(tmp_path, "a", when.format(canary=canary)))
    with pytest.raises(ConfigError) as e:
        reg.verify(ref)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        reg.promote("m", 1)
    assert reg.alias("m", "production") is None
    assert not canary.exists()
    # Rules that compile against the schema promote.
    _register(reg, _with_rules(tmp_path, "b", "temp > 0.5 and hr in ['17', '18']"))
    reg.promote("m", 2)
    assert reg.alias("m", "production") == 2


def test_rules_without_a_schema_to_check_them_against_are_refused(store, tmp_path):
    reg = Registry(store)
    _register(reg, _with_rules(tmp_path, "a", "temp > 1", schema=False))
    with pytest.raises(RegistryError, match="m v1 has rules.yaml but no schema.json"):
        reg.promote("m", 1)
