"""Load one registry version into memory: verified files -> a ready ``Bundle``.

Two sources, one result:

- a version directory, exactly what an InferenceService ``storageUri`` points at (KServe's
  storage initializer copies it to ``/mnt/models``): every file listed in
  ``manifest.json`` is checked against its sha256 first; any mismatch refuses to load;
- the store, via ``Registry.download`` (which verifies as it copies).

The bundle is built completely before anyone sees it, so swapping models is one
reference assignment (see ``serving.model.TabularPredictor.swap``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from driftloop.errors import IntegrityError, NotFound
from driftloop.model import TabularModel
from driftloop.registry import MANIFEST, Registry, VersionRef, sha256
from driftloop.rules import RULES_FILE, RuleSet, load_rules
from serving.protocol import Schema

SCHEMA = "schema.json"


@dataclass(frozen=True)
class Bundle:
    """Everything one request needs, immutable: a request keeps the bundle it started with."""

    model: TabularModel
    schema: Schema
    rules: RuleSet | None
    version: int


def verify_dir(directory: Path) -> dict:
    """The manifest, after checking every file it lists; IntegrityError otherwise."""
    man_path = directory / MANIFEST
    if not man_path.is_file():
        raise NotFound(f"{directory} holds no {MANIFEST}: not a registry version directory")
    try:
        manifest = json.loads(man_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{man_path} is not a valid manifest: {e}") from e
    for name, entry in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            raise IntegrityError(
                f"{path} is listed in {MANIFEST} but missing; re-copy the whole version directory"
            )
        if sha256(path.read_bytes()) != entry["sha256"]:
            raise IntegrityError(
                f"{path}: sha256 does not match {MANIFEST}; the copy is "
                "corrupt or was modified: refusing to serve it"
            )
    return manifest


def load_dir(directory: Path, verify: bool = True) -> Bundle:
    manifest = verify_dir(directory) if verify else json.loads((directory / MANIFEST).read_text())
    try:
        schema = Schema.from_json(json.loads((directory / SCHEMA).read_text()))
    except FileNotFoundError as e:
        raise NotFound(f"{directory} has no {SCHEMA}: registered before serving existed?") from e
    rules_path = directory / RULES_FILE
    rules = load_rules(rules_path.read_text(), schema.kinds) if rules_path.is_file() else None
    model = TabularModel.load(directory)  # safetensors + JSON; never pickle
    if model.features != schema.names:
        raise IntegrityError(
            f"{directory}: schema.json features {schema.names} do not match "
            f"the model's {model.features}"
        )
    return Bundle(model, schema, rules, int(manifest.get("version", 0)))


def load_from_registry(registry: Registry, ref: VersionRef) -> Bundle:
    with tempfile.TemporaryDirectory(prefix=f"driftloop-{ref.model}-v{ref.version}-") as tmp:
        # Registry.download verified every byte; no need to hash twice.
        return load_dir(registry.download(ref, Path(tmp)), verify=False)
