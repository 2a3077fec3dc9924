"""Runs inside a private network namespace (test_container.py): the container entrypoint,
`python -m serving`, binds every address of a namespace that has only loopback, and the
standard clients call it there. Prints one JSON object of what it saw (the last line).

    python tests/serving/container_driver.py MODEL_DIR ROWS_JSON
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def main() -> None:
    model_dir, rows = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model_dir", model_dir, "--model_name", "bike-sharing"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict = {}
    try:
        with httpx.Client(base_url="http://127.0.0.1:8080", timeout=10) as c:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if c.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"server did not start: {server.stderr.read()[-2000:]}")  # type: ignore[union-attr]
                time.sleep(0.2)
            seen["v1"] = c.post("/v1/models/bike-sharing:predict", json={"instances": rows}).json()
            r = c.post("/v2/repository/models/bike-sharing/unload")
            seen["http_unload"] = [r.status_code, r.json()]
            calls = [
                {
                    "op": "infer",
                    "model": "bike-sharing",
                    "columns": {k: [r[k] for r in rows] for k in rows[0]},
                    "types": {
                        k: "BYTES" if isinstance(v, str) else "FP64" for k, v in rows[0].items()
                    },
                },
                {"op": "unload", "model": "bike-sharing"},
                {"op": "server_ready"},
            ]
            grpc = subprocess.run(
                [sys.executable, str(HERE / "oip_grpc.py"), "127.0.0.1:8081"],
                input=json.dumps(calls),
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            seen["grpc"] = json.loads(grpc.stdout.strip().splitlines()[-1])
            seen["ready_after"] = c.get("/v2/health/ready").status_code
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            seen["exit"] = server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            seen["exit"] = "killed"
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
