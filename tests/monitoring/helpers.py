"""CloudEvent builders and a collector subprocess for the monitoring tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from driftloop.formats import FeatureSchema, Lineage, TabularSchema, VersionFiles
from driftloop.registry import Registry, VersionRef
from driftloop.settings import Settings
from driftloop.store import Store
from tests.conftest import ROOT, free_port

REQ = "org.kubeflow.serving.inference.request"
RESP = "org.kubeflow.serving.inference.response"
SCHEMA = TabularSchema(
    model="bike",
    task="regression",
    target="cnt",
    features=[
        FeatureSchema(name="temp", kind="numeric", datatype="FP64"),
        FeatureSchema(name="season", kind="categorical", datatype="BYTES"),
    ],
)


def headers(ce_type: str, rid: str, endpoint: str = "default", **extra: str) -> dict[str, str]:
    """Binary-mode CloudEvent headers as KServe's logger sends them."""
    return {
        "ce-specversion": "1.0",
        "ce-type": ce_type,
        "ce-id": rid,
        "ce-source": "http://localhost:9081/",
        "ce-time": "2024-05-01T10:00:00Z",
        "ce-inferenceservicename": "bike",
        "ce-namespace": "ml",
        "ce-component": "predictor",
        "ce-endpoint": endpoint,
        "content-type": "application/json",
        **extra,
    }


def structured(ce_type: str, rid: str, data: object, **extra: object) -> dict:
    """The same event in structured form, as one element of a CloudEvents batch."""
    attrs = {k[3:]: v for k, v in headers(ce_type, rid).items() if k.startswith("ce-")}
    return {**attrs, "datacontenttype": "application/json", "data": data, **extra}


def as_asgi(h: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in h.items()]


def v1_pair(rid: str, n: int = 1, model: str = "bike", version: str = "1") -> tuple[dict, dict]:
    req = {"instances": [{"temp": 10.0 + i, "season": "summer"} for i in range(n)]}
    resp = {
        "predictions": [100.0 + i for i in range(n)],
        "model_name": model,
        "model_version": version,
    }
    return req, resp


def register_fake(store: Store, tmp: Path, model: str = "bike", versions: int = 1) -> VersionRef:
    """Committed versions that only have a schema.json: enough for the collector, which
    logs registered models only."""
    src = tmp / f"{model}-version"
    src.mkdir(parents=True, exist_ok=True)
    (src / VersionFiles.SCHEMA).write_bytes(SCHEMA.model_copy(update={"model": model}).dump())
    registry = Registry(store)
    for _ in range(versions):
        ref = registry.register(model, src, Lineage(run_id="test fake"), "tabular-torch")
    return ref


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive one of the collector's coroutines from a synchronous test."""
    return asyncio.run(coro)


def settings_env(settings: Settings) -> dict[str, str]:
    env = {"DRIFTLOOP_STORE_URI": settings.store_uri, "PYTHONPATH": str(ROOT)}
    if settings.s3_endpoint:
        env |= {
            "DRIFTLOOP_S3_ENDPOINT": settings.s3_endpoint,
            "DRIFTLOOP_S3_SECURE": "false",
            "DRIFTLOOP_S3_ACCESS_KEY": "test",
            "DRIFTLOOP_S3_SECRET_KEY": "test",
            "DRIFTLOOP_S3_REGION": "us-east-1",
        }
    return env


class Running:
    """A collector subprocess on 127.0.0.1 and an HTTP client for it."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def send(self, ce_type: str, rid: str, body: object, **h: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post("/", headers=headers(ce_type, rid, **h), content=content)

    def send_pair(self, rid: str, n: int = 1, endpoint: str = "default") -> None:
        req, resp = v1_pair(rid, n)
        assert self.send(REQ, rid, req, endpoint=endpoint).status_code == 200
        assert self.send(RESP, rid, resp, endpoint=endpoint).status_code == 200

    def send_batch(self, events: list[dict]) -> httpx.Response:
        return self.http.post(
            "/",
            headers={"content-type": "application/cloudevents-batch+json"},
            content=json.dumps(events).encode(),
        )

    def metric(self, name: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")

    def terminate(self) -> int:
        """SIGTERM, as Kubernetes does; returns the exit code."""
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        """SIGKILL: a crash, an OOM kill; nothing gets to run."""
        self.http.close()
        self.proc.kill()
        self.proc.wait(timeout=30)


@contextmanager
def collector(
    settings: Settings,
    *args: str,
    data_dir: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Running]:
    """A collector subprocess; its write-ahead log in ``data_dir`` (default: a fresh one)."""
    port = port or free_port()
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="collector-test-"))
    cmd = [sys.executable, "-m", "monitoring.collector", "--port", str(port), *args]
    log = Path(tempfile.mkdtemp(prefix="collector-log-")) / "stderr.log"
    with log.open("wb") as err:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(
            [*cmd, "--data-dir", str(data_dir)],
            env={**os.environ, **settings_env(settings), **(env or {})},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    running = Running(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, running.stderr
            try:
                if running.http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "collector did not start"
                time.sleep(0.1)
        yield running
    finally:
        running.http.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
