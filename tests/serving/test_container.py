"""The container entrypoint (`python -m serving`, what the ServingRuntime runs) with its
defaults: gRPC on 8081 for a standard client, predictions equal V1's, model load/unload
refused over HTTP and gRPC, readiness unchanged, a clean exit on SIGTERM.

kserve's REST server binds 0.0.0.0 with no flag to change it, so the server runs in a
private network namespace (`unshare -rn`: loopback only, made for this test and gone with
it) together with the clients (container_driver.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.conftest import HERE, Trained, rows


def test_container_serves_grpc_and_refuses_unload(bike: Trained, tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("this test needs unshare(1) and ip(8) (util-linux, iproute2)")
    instances = rows(bike, 5)
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(instances))
    driver = f"{sys.executable} {HERE / 'container_driver.py'} {bike.dir} {rows_file}"
    run = subprocess.run(
        ["unshare", "-rn", "sh", "-c", f"ip link set lo up && exec {driver}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["v1"]["model_version"] == "1"
    status, body = seen["http_unload"]
    assert status == 403 and "--enable_repository_api" in body["error"]
    infer, unload, ready = seen["grpc"]
    assert infer["ok"] and infer["raw"], infer
    assert infer["outputs"]["prediction"] == seen["v1"]["predictions"]
    assert not unload["ok"] and unload["status"] == "StatusCode.PERMISSION_DENIED", unload
    assert "--enable_repository_api" in unload["message"]
    assert ready == {"ok": True, "ready": True, "live": True}
    assert seen["ready_after"] == 200
    assert seen["exit"] == 0
