"""Load one registry version into memory: verified files -> a ready ``Bundle``.

Two sources, one result:

- a version directory, exactly what an InferenceService ``storageUri`` points at (KServe's
  storage initializer copies it to ``/mnt/models``): every file listed in
  ``manifest.json`` is checked against its sha256 first; any mismatch refuses to load;
- the store, via ``Registry.download`` (which verifies as it copies).

The version's family (recorded in its manifest) loads the model; a family this
installation does not know refuses to load with one message naming the version, and so
do business rules that do not compile against the version's schema
(``driftloop.rules.check_version_rules``: nothing in them is ever executed). The
bundle is built completely before anyone sees it, so swapping models is one reference
assignment (see ``serving.model.Predictor.swap``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from driftloop.errors import IntegrityError, NotFound
from driftloop.families import FittedModel, get_family
from driftloop.formats import InputSchema, Manifest, VersionFiles, parse_schema
from driftloop.registry import Registry, VersionRef, sha256
from driftloop.rules import RuleSet, check_version_rules


@dataclass(frozen=True)
class Bundle:
    """Everything one request needs, immutable: a request keeps the bundle it started with."""

    model: FittedModel
    schema: InputSchema
    rules: RuleSet | None
    version: int
    family: str


def read_manifest(directory: Path) -> Manifest:
    path = directory / VersionFiles.MANIFEST
    if not path.is_file():
        raise NotFound(f"{directory} holds no {VersionFiles.MANIFEST}: not a registry version")
    manifest: Manifest = Manifest.parse(path.read_bytes(), str(path))
    return manifest


def verify_dir(directory: Path) -> Manifest:
    """The manifest, after checking every file it lists; IntegrityError otherwise."""
    manifest = read_manifest(directory)
    for name, entry in sorted(manifest.files.items()):
        path = directory / name
        if not path.is_file():
            raise IntegrityError(
                f"{path} is listed in {VersionFiles.MANIFEST} but missing; "
                "re-copy the whole version directory"
            )
        if sha256(path.read_bytes()) != entry.sha256:
            raise IntegrityError(
                f"{path}: sha256 does not match {VersionFiles.MANIFEST}; the copy is "
                "corrupt or was modified: refusing to serve it"
            )
    return manifest


def load_dir(directory: Path, verify: bool = True) -> Bundle:
    manifest = verify_dir(directory) if verify else read_manifest(directory)
    where = f"{manifest.model} v{manifest.version}"
    family = get_family(manifest.family, where)
    schema_path = directory / VersionFiles.SCHEMA
    if not schema_path.is_file():
        raise NotFound(f"{directory} has no {VersionFiles.SCHEMA}: not a servable version")
    schema = parse_schema(schema_path.read_bytes(), f"{where}/{VersionFiles.SCHEMA}")
    rules_path = directory / VersionFiles.RULES
    rules = (
        check_version_rules(rules_path.read_bytes(), schema, f"{where}/{VersionFiles.RULES}")
        if rules_path.is_file()
        else None
    )
    model = family.load(directory)  # the family's safe files; never pickle
    if model.inputs != schema.inputs:
        raise IntegrityError(
            f"{directory}: {VersionFiles.SCHEMA} inputs {schema.inputs} do not match "
            f"the model's {model.inputs}"
        )
    return Bundle(model, schema, rules, manifest.version, family.name)


def load_from_registry(registry: Registry, ref: VersionRef) -> Bundle:
    with tempfile.TemporaryDirectory(prefix=f"driftloop-{ref.model}-v{ref.version}-") as tmp:
        # Registry.download verified every byte; no need to hash twice.
        return load_dir(registry.download(ref, Path(tmp)), verify=False)
