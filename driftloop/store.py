"""The object store: the contract between every part of driftloop.

One interface, two backends, addressed by URI:

- a local directory (``.driftloop``, ``/abs/path`` or ``file:///abs/path``), the default;
- ``s3://bucket/prefix`` on MinIO or any S3, through the ``minio`` client.

Keys are ``/``-separated relative paths (``models/bike/versions/3/manifest.json``).
Every write is atomic: a reader sees the old object or the new one, never a part.
``create`` is an exclusive create (leases, version claims): exactly one of many
concurrent callers wins.
"""

from __future__ import annotations

import io
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import urllib3

from driftloop.errors import ConfigError, NotFound, StoreError
from driftloop.settings import Settings


def _check_key(key: str) -> str:
    p = PurePosixPath(key)
    if not key or p.is_absolute() or ".." in p.parts or key.endswith("/"):
        raise StoreError(f"invalid store key {key!r}")
    return key


class Store(ABC):
    """Bytes by key. Subclasses implement the six primitives; helpers build on them."""

    uri: str

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; NotFound if absent."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write (or replace) the object atomically."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write only if absent; True if this call created it. Race-free."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; absent is fine."""

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for the key when the backend has one (lets readers stream)."""
        return None

    # -- helpers on top of the primitives --------------------------------------------
    def get_json(self, key: str) -> Any:  # parsed JSON: the caller knows its shape
        import json

        try:
            return json.loads(self.get(key))
        except ValueError as e:
            raise StoreError(f"{self.uri}/{key} is not valid JSON: {e}") from e

    def put_json(self, key: str, obj: object) -> None:
        import json

        self.put(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


class LocalStore(Store):
    """A directory. Atomic writes are temp file + ``os.replace`` in the same directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create store directory {self.root}: {e}") from e

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise NotFound(f"{self.uri}/{key} does not exist") from e
        except OSError as e:
            raise StoreError(f"cannot read {self.uri}/{key}: {e}") from e

    def _write_temp(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            tmp = self._write_temp(path, data)
            os.replace(tmp, path)
        except OSError as e:
            raise StoreError(f"cannot write {self.uri}/{key}: {e}") from e

    def create(self, key: str, data: bytes) -> bool:
        # Write the whole content to a temp file, then hard-link it into place: link()
        # fails if the name exists, so creation is exclusive and never shows a partial file.
        path = self._path(key)
        try:
            tmp = self._write_temp(path, data)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as e:
            raise StoreError(f"cannot create {self.uri}/{key}: {e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = [
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        ]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store(Store):
    """A bucket and prefix on MinIO or any S3, through the ``minio`` client.

    A PUT is whole-object, so S3 writes are atomic by construction. ``create`` sends
    ``If-None-Match: *`` (a conditional write, supported by AWS S3 and MinIO): the server
    rejects the second writer with 412. minio-py's public ``put_object`` would rename that
    header into user metadata, so this one call goes through ``_put_object``.
    """

    def __init__(self, uri: str, settings: Settings) -> None:
        from minio import Minio

        parsed = urlparse(uri)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.uri = uri.rstrip("/")
        if not self.bucket:
            raise ConfigError(f"store URI {uri!r} names no bucket (s3://bucket/prefix)")
        endpoint = settings.s3_endpoint or "s3.amazonaws.com"
        endpoint = endpoint.removeprefix("http://").removeprefix("https://")
        self.client = Minio(
            endpoint,
            access_key=settings.s3_access_key.get_secret_value()
            if settings.s3_access_key
            else None,
            secret_key=settings.s3_secret_key.get_secret_value()
            if settings.s3_secret_key
            else None,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=_http_client(settings.s3_timeout_s),
        )

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, key: str, e: Exception) -> StoreError:
        return StoreError(f"cannot {what} {self.uri}/{key}: {e}")

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            resp = self.client.get_object(self.bucket, self._key(key))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket"):
                raise NotFound(f"{self.uri}/{key} does not exist") from e
            raise self._fail("read", key, e) from e
        except Exception as e:  # urllib3 connection errors and the like
            raise self._fail("read", key, e) from e

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))
        except Exception as e:
            raise self._fail("write", key, e) from e

    def create(self, key: str, data: bytes) -> bool:
        from minio.error import S3Error

        try:
            self.client._put_object(
                self.bucket, self._key(key), data, headers={"If-None-Match": "*"}
            )
            return True
        except S3Error as e:
            if e.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise self._fail("create", key, e) from e
        except Exception as e:
            raise self._fail("create", key, e) from e

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._key(key))
            return True
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise self._fail("stat", key, e) from e
        except Exception as e:
            raise self._fail("stat", key, e) from e

    def _iter(self, prefix: str) -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        start = f"{self._key(prefix)}/" if prefix else base
        for obj in self.client.list_objects(self.bucket, prefix=start, recursive=True):
            name = obj.object_name or ""
            yield name[len(base) :]

    def list(self, prefix: str = "") -> list[str]:
        try:
            return sorted(self._iter(prefix.rstrip("/")))
        except Exception as e:
            raise self._fail("list", prefix, e) from e

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, self._key(key))
        except Exception as e:
            raise self._fail("delete", key, e) from e


def _http_client(read_timeout_s: float) -> urllib3.PoolManager:
    # Fail in seconds, not minutes, when the server is down or hangs: a clear error beats a
    # hang. Worst case: (5 s connect + read timeout) x 2 attempts.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=read_timeout_s),
        retries=urllib3.Retry(total=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=16,
    )


def open_store(settings: Settings, uri: str | None = None) -> Store:
    """The store named by ``uri`` (default: the settings' store URI)."""
    uri = uri or settings.store_uri
    if uri.startswith("s3://"):
        return S3Store(uri, settings)
    return LocalStore(Path(uri.removeprefix("file://")))
