"""The model registry, on the store: immutable versions and atomic aliases.

Layout (``driftloop.formats``)::

    models/<m>/versions/<n>/CLAIM          exclusive create: allocates version n to one writer
    models/<m>/versions/<n>/...files       the family's model files, schema.json, metrics.json,
                                           card.md, dataset.yaml, reference/...
    models/<m>/versions/<n>/manifest.json  family, sha256 of every file, lineage
    models/<m>/versions/<n>/COMMITTED      written last: a version without it does not exist
    models/<m>/aliases.json                production and previous: one object, one write

A crash mid-registration leaves files without COMMITTED: invisible to every reader and
never reused (the CLAIM stays). Promote and rollback are single writes of the aliases
object, so no cut can leave one pointer moved and the other not; promote first verifies
that the version is committed, of a known family, that every file matches its sha256 and
that its business rules compile against its input schema (``rules.check_version_rules``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from driftloop.errors import IntegrityError, NotFound, RegistryError
from driftloop.formats import (
    ALIAS_NAMES,
    Alias,
    Aliases,
    FileEntry,
    Lineage,
    Manifest,
    VersionFiles,
    aliases_key,
    legacy_alias_key,
    parse_schema,
    version_prefix,
    versions_prefix,
)
from driftloop.store import Store


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
        return version_prefix(self.model, self.version)

    def __str__(self) -> str:
        return f"{self.model} v{self.version}"


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading -----------------------------------------------------------------------
    def models(self) -> list[str]:
        """Models with at least one committed version (one store listing)."""
        return sorted({model for model, _ in self._committed("models")})

    def versions(self, model: str) -> list[int]:
        """Committed versions only, ascending."""
        return sorted(v for m, v in self._committed(versions_prefix(model)) if m == model)

    def _committed(self, prefix: str) -> list[tuple[str, int]]:
        """(model, version) for every COMMITTED marker under ``prefix``."""
        out = []
        for key in self.store.list(prefix):
            m = re.fullmatch(rf"models/([^/]+)/versions/(\d+)/{VersionFiles.COMMITTED}", key)
            if m:
                out.append((m.group(1), int(m.group(2))))
        return out

    def is_committed(self, ref: VersionRef) -> bool:
        return self.store.exists(f"{ref.prefix}/{VersionFiles.COMMITTED}")

    def manifest(self, ref: VersionRef) -> Manifest:
        if not self.is_committed(ref):
            raise NotFound(f"model {ref.model!r} has no committed version {ref.version}")
        key = f"{ref.prefix}/{VersionFiles.MANIFEST}"
        manifest: Manifest = Manifest.parse(self.store.get(key), f"{self.store.uri}/{key}")
        if (manifest.model, manifest.version) != (ref.model, ref.version):
            raise IntegrityError(
                f"{ref}: its manifest says {manifest.model} v{manifest.version}; "
                "the version directory was copied or edited by hand"
            )
        return manifest

    def read_file(self, ref: VersionRef, name: str, manifest: Manifest | None = None) -> bytes:
        """A version's file, verified against the manifest's sha256 (pass ``manifest``
        when reading several files of one version: it is fetched once)."""
        entry = (manifest or self.manifest(ref)).files.get(name)
        if entry is None:
            raise NotFound(f"{ref} has no file {name!r}")
        data = self.store.get(f"{ref.prefix}/{name}")
        if sha256(data) != entry.sha256:
            raise IntegrityError(f"{ref}/{name}: sha256 mismatch")
        return data

    def download(self, ref: VersionRef, dest: Path) -> Path:
        """Copy a committed version to ``dest``, verifying every file. File names were
        checked to be relative and normalised when the manifest was read."""
        man = self.manifest(ref)
        root = dest.resolve()
        for name in man.files:
            target = (root / name).resolve()
            if not target.is_relative_to(root):  # belt and braces over safe_relative
                raise IntegrityError(f"{ref}: file {name!r} would be written outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_file(ref, name, man))
        (dest / VersionFiles.MANIFEST).write_bytes(man.dump())
        return dest

    def verify(self, ref: VersionRef) -> Manifest:
        """The manifest, after checking that the version is committed, its family is
        known, every file it lists is present and matches its sha256, and its business
        rules (if any) compile against its input schema (ConfigError if not)."""
        from driftloop.families import get_family
        from driftloop.rules import check_version_rules

        man = self.manifest(ref)
        get_family(man.family, where=str(ref))
        kept = {}
        for name in man.files:
            data = self.read_file(ref, name, man)
            if name in (VersionFiles.RULES, VersionFiles.SCHEMA):
                kept[name] = data
        if VersionFiles.RULES in kept:
            if VersionFiles.SCHEMA not in kept:
                raise IntegrityError(
                    f"{ref} has {VersionFiles.RULES} but no {VersionFiles.SCHEMA} to check it"
                )
            schema = parse_schema(kept[VersionFiles.SCHEMA], f"{ref}/{VersionFiles.SCHEMA}")
            check_version_rules(kept[VersionFiles.RULES], schema, f"{ref}/{VersionFiles.RULES}")
        return man

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

    def aliases(self, model: str) -> Aliases:
        """Both pointers; read from the 0.1.0 layout (one object per alias) when the model
        has not been promoted since."""
        key = aliases_key(model)
        try:
            return Aliases.parse(self.store.get(key), f"{self.store.uri}/{key}")
        except NotFound:
            pass
        legacy = {}
        for name in ALIAS_NAMES:
            old = legacy_alias_key(model, name)
            try:
                legacy[name] = Alias.parse(self.store.get(old), f"{self.store.uri}/{old}")
            except NotFound:
                continue
        return Aliases(**legacy)

    def alias(self, model: str, name: str) -> int | None:
        if name not in ALIAS_NAMES:
            raise RegistryError(f"unknown alias {name!r}; aliases are {list(ALIAS_NAMES)}")
        return self.aliases(model).get(name)

    # -- writing -----------------------------------------------------------------------
    def register(self, model: str, source: Path, lineage: Lineage, family: str) -> VersionRef:
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
            entries[name] = FileEntry(sha256=sha256(data), bytes=len(data))
        manifest = Manifest(
            model=model,
            version=ref.version,
            created=_now(),
            family=family,
            files=entries,
            lineage=lineage,
        )
        self.store.put(f"{ref.prefix}/{VersionFiles.MANIFEST}", manifest.dump())
        self.store.put(f"{ref.prefix}/{VersionFiles.COMMITTED}", _now().encode())
        return ref

    def _claim(self, model: str) -> VersionRef:
        claimed = {
            int(m.group(1))
            for k in self.store.list(versions_prefix(model))
            if (m := re.search(r"/versions/(\d+)/", k))
        }
        n = max(claimed, default=0) + 1
        while not self.store.create(
            f"{version_prefix(model, n)}/{VersionFiles.CLAIM}", _now().encode()
        ):
            n += 1  # a concurrent registration took n
        return VersionRef(model, n)

    def promote(self, model: str, version: int, reason: str = "") -> None:
        """Point production at ``version`` (verified first); the old production becomes
        previous. One write."""
        ref = VersionRef(model, version)
        if not self.is_committed(ref):
            raise RegistryError(f"cannot promote {ref}: not a committed version")
        try:
            self.verify(ref)
        except (IntegrityError, NotFound) as e:
            raise RegistryError(f"cannot promote {ref}: {e}") from e
        current = self.aliases(model)
        if current.get("production") == version:
            return
        now = _now()
        previous = (
            Alias(version=current.production.version, updated=now, reason=f"replaced by v{version}")
            if current.production is not None
            else current.previous
        )
        self._write(
            model,
            Aliases(
                production=Alias(version=version, updated=now, reason=reason), previous=previous
            ),
        )

    def rollback(self, model: str) -> int:
        """Swap production and previous in one write; returns the restored version."""
        current = self.aliases(model)
        if current.previous is None:
            raise RegistryError(f"model {model!r} has no previous version to roll back to")
        prev, cur = current.previous.version, current.get("production")
        now = _now()
        self._write(
            model,
            Aliases(
                production=Alias(version=prev, updated=now, reason=f"rollback from v{cur}"),
                previous=Alias(version=cur, updated=now, reason="rolled back") if cur else None,
            ),
        )
        return prev

    def _write(self, model: str, aliases: Aliases) -> None:
        self.store.put(aliases_key(model), aliases.dump())
