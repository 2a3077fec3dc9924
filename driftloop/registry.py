"""The model registry, on the store: immutable versions and atomic aliases.

Layout (``models/<model>/``)::

    versions/<n>/CLAIM           exclusive create: allocates version n to one writer
    versions/<n>/...files        model.safetensors, preprocessor.json, architecture.json,
                                 schema.json, metrics.json, card.md, reference/...
    versions/<n>/manifest.json   sha256 of every file + lineage
    versions/<n>/COMMITTED       written last: a version without it does not exist
    aliases/production.json      {"version": n, ...}  single-object atomic pointers
    aliases/previous.json

A crash mid-registration leaves files without COMMITTED: invisible to every reader and
never reused (the CLAIM stays). Promote and rollback are single alias writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from driftloop.errors import IntegrityError, NotFound, RegistryError
from driftloop.store import Store

COMMITTED, MANIFEST, CLAIM = "COMMITTED", "manifest.json", "CLAIM"
ALIASES = ("production", "previous")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class VersionRef:
    model: str
    version: int

    @property
    def prefix(self) -> str:
        return f"models/{self.model}/versions/{self.version}"


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading -----------------------------------------------------------------------
    def models(self) -> list[str]:
        """Models with at least one committed version (one store listing)."""
        return sorted({model for model, _ in self._committed("models")})

    def versions(self, model: str) -> list[int]:
        """Committed versions only, ascending."""
        return sorted(v for m, v in self._committed(f"models/{model}/versions") if m == model)

    def _committed(self, prefix: str) -> list[tuple[str, int]]:
        """(model, version) for every COMMITTED marker under ``prefix``."""
        out = []
        for key in self.store.list(prefix):
            m = re.fullmatch(rf"models/([^/]+)/versions/(\d+)/{COMMITTED}", key)
            if m:
                out.append((m.group(1), int(m.group(2))))
        return out

    def is_committed(self, ref: VersionRef) -> bool:
        return self.store.exists(f"{ref.prefix}/{COMMITTED}")

    def manifest(self, ref: VersionRef) -> dict:
        if not self.is_committed(ref):
            raise NotFound(f"model {ref.model!r} has no committed version {ref.version}")
        return dict(self.store.get_json(f"{ref.prefix}/{MANIFEST}"))

    def read_file(self, ref: VersionRef, name: str, manifest: dict | None = None) -> bytes:
        """A version's file, verified against the manifest's sha256 (pass ``manifest``
        when reading several files of one version: it is fetched once)."""
        entry = (manifest or self.manifest(ref))["files"].get(name)
        if entry is None:
            raise NotFound(f"{ref.model} v{ref.version} has no file {name!r}")
        data = self.store.get(f"{ref.prefix}/{name}")
        if sha256(data) != entry["sha256"]:
            raise IntegrityError(f"{ref.model} v{ref.version}/{name}: sha256 mismatch")
        return data

    def download(self, ref: VersionRef, dest: Path) -> Path:
        """Copy a committed version to ``dest``, verifying every file."""
        man = self.manifest(ref)
        for name in man["files"]:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_file(ref, name, man))
        (dest / MANIFEST).write_text(json.dumps(man, indent=2, sort_keys=True))
        return dest

    def resolve(
        self, model: str, version: int | None = None, alias: str | None = None
    ) -> VersionRef:
        """A version number, an alias, or (neither) the production alias."""
        if version is not None:
            ref = VersionRef(model, version)
            self.manifest(ref)  # raises NotFound when absent
            return ref
        name = alias or "production"
        target = self.alias(model, name)
        if target is None:
            raise NotFound(
                f"model {model!r} has no {name!r} alias"
                + ("" if self.versions(model) else " (and no versions)")
            )
        return VersionRef(model, target)

    def alias(self, model: str, name: str) -> int | None:
        try:
            return int(self.store.get_json(f"models/{model}/aliases/{name}.json")["version"])
        except NotFound:
            return None

    # -- writing -----------------------------------------------------------------------
    def register(self, model: str, source: Path, lineage: dict) -> VersionRef:
        """Upload every file under ``source`` as the next version; COMMITTED last."""
        files = sorted(p for p in source.rglob("*") if p.is_file())
        if not files:
            raise RegistryError(f"nothing to register in {source}")
        ref = self._claim(model)
        entries = {}
        for p in files:
            data = p.read_bytes()
            name = p.relative_to(source).as_posix()
            self.store.put(f"{ref.prefix}/{name}", data)
            entries[name] = {"sha256": sha256(data), "bytes": len(data)}
        manifest = {
            "model": model,
            "version": ref.version,
            "created": _now(),
            "files": entries,
            "lineage": lineage,
        }
        self.store.put_json(f"{ref.prefix}/{MANIFEST}", manifest)
        self.store.put(f"{ref.prefix}/{COMMITTED}", _now().encode())
        return ref

    def _claim(self, model: str) -> VersionRef:
        claimed = {
            int(m.group(1))
            for k in self.store.list(f"models/{model}/versions")
            if (m := re.search(r"/versions/(\d+)/", k))
        }
        n = max(claimed, default=0) + 1
        while not self.store.create(f"models/{model}/versions/{n}/{CLAIM}", _now().encode()):
            n += 1  # a concurrent registration took n
        return VersionRef(model, n)

    def promote(self, model: str, version: int, reason: str = "") -> None:
        """Point production at ``version``; the old production becomes previous."""
        ref = VersionRef(model, version)
        if not self.is_committed(ref):
            raise RegistryError(f"cannot promote {model} v{version}: not a committed version")
        current = self.alias(model, "production")
        if current == version:
            return
        if current is not None:
            self._write_alias(model, "previous", current, f"replaced by v{version}")
        self._write_alias(model, "production", version, reason)

    def rollback(self, model: str) -> int:
        """Swap production back to previous in one step; returns the restored version."""
        prev, cur = self.alias(model, "previous"), self.alias(model, "production")
        if prev is None:
            raise RegistryError(f"model {model!r} has no previous version to roll back to")
        self._write_alias(model, "production", prev, f"rollback from v{cur}")
        if cur is not None:
            self._write_alias(model, "previous", cur, "rolled back")
        return prev

    def _write_alias(self, model: str, name: str, version: int, reason: str) -> None:
        self.store.put_json(
            f"models/{model}/aliases/{name}.json",
            {"version": version, "updated": _now(), "reason": reason},
        )
