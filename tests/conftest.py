"""Shared fixtures: a real S3-protocol server on 127.0.0.1 and both store backends."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from driftloop.ports import free_port
from driftloop.settings import Settings, load_settings
from driftloop.store import Store, open_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto in server mode: a real HTTP S3 endpoint, spoken to by the real minio client."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_server: str) -> Settings:
    """Settings for a fresh bucket on the test server."""
    from minio import Minio

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    Minio(s3_server, access_key="test", secret_key="test", secure=False).make_bucket(bucket)
    return load_settings(
        store_uri=f"s3://{bucket}/driftloop",
        s3_endpoint=s3_server,
        s3_access_key="test",
        s3_secret_key="test",
        s3_secure=False,
        s3_region="us-east-1",
    )


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return load_settings(store_uri=str(tmp_path / "store"))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each store test runs against both backends."""
    settings = request.getfixturevalue(f"{request.param}_settings")
    return open_store(settings)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, poll: float = 0.05) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False
