"""Collector throughput: paired CloudEvents/s, peak RSS and loss on a clean shutdown.

Run it::

    .venv/bin/python bench/collector.py [--pairs 20000] [--connections 32]

1. start ``python -m monitoring.collector`` on 127.0.0.1 with a local store in a temp dir;
2. send ``2 × pairs`` events (request and response per id, in either order) over
   ``--connections`` keep-alive connections from one asyncio client, as fast as it goes;
3. SIGTERM the collector, wait for it to exit, count the rows in the store;
4. print one JSON line: ``events_per_s``, ``rss_mb`` (collector peak), ``lost``, ``machine``.

The client is a bare HTTP/1.1 writer on uvloop, not httpx: it shares the same cores as the
collector, and a heavier client would measure itself. Even so, it competes for CPU, so the
figure is a lower bound of what the collector does alone (``client_cpu_s`` says how much).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop.ports import free_port  # noqa: E402

DEADLINE_S = 180  # the whole run, including start-up and the final flush


def _event(kind: str, rid: str, body: bytes, port: int) -> bytes:
    head = (
        f"POST / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"ce-specversion: 1.0\r\nce-type: org.kubeflow.serving.inference.{kind}\r\n"
        f"ce-id: {rid}\r\nce-source: http://bench\r\nce-time: 2024-05-01T12:00:00Z\r\n"
        "ce-inferenceservicename: bench\r\nce-namespace: default\r\n"
        f"ce-component: predictor\r\nce-endpoint: default\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _events(pairs: int, port: int) -> list[bytes]:
    """Request/response pairs with one instance each; a third arrive response-first."""
    rnd, out = random.Random(0), []
    for i in range(pairs):
        rid = f"bench-{i}"
        req = json.dumps(
            {
                "instances": [
                    {
                        "temp": rnd.random(),
                        "hum": rnd.random(),
                        "hour": rnd.randrange(24),
                        "season": "summer",
                        "weekday": rnd.randrange(7),
                    }
                ]
            }
        ).encode()
        resp = json.dumps(
            {"predictions": [rnd.random() * 100], "model_name": "bench", "model_version": "1"}
        ).encode()
        a, b = _event("request", rid, req, port), _event("response", rid, resp, port)
        out += [b, a] if i % 3 == 0 else [a, b]
    return out


async def _send_all(events: list[bytes], port: int, connections: int) -> int:
    """Send every event, one in flight per connection; returns the number of non-200s."""
    it, bad = iter(events), 0

    async def worker() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for msg in it:
            writer.write(msg)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                bad += 1
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if length:
                await reader.readexactly(length)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return bad


def _peak_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append(proc.memory_info().rss / 2**20)
        except psutil.Error:
            return
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    import uvloop

    from driftloop.payloads import read_logs
    from driftloop.store import LocalStore

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "DRIFTLOOP_STORE_URI": f"{tmp}/store", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitoring.collector", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_ready(port, proc)
            events = _events(args.pairs, port)
            stop, rss = threading.Event(), [0.0]
            threading.Thread(target=_peak_rss, args=(proc.pid, stop, rss), daemon=True).start()
            cpu0, t0 = time.process_time(), time.perf_counter()
            bad = uvloop.run(
                asyncio.wait_for(_send_all(events, port, args.connections), DEADLINE_S)
            )
            elapsed, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            collector_cpu = sum(psutil.Process(proc.pid).cpu_times()[:2])
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            stop.set()
        finally:
            if proc.poll() is None:
                proc.kill()
        rows = len(read_logs(LocalStore(Path(tmp) / "store"), "bench"))
    result = {
        "events_per_s": round(len(events) / elapsed),
        "rss_mb": round(max(rss), 1),
        "lost": args.pairs - rows,
        "events": len(events),
        "rows": rows,
        "non_200": bad,
        "seconds": round(elapsed, 2),
        "client_cpu_s": round(client_cpu, 2),
        "collector_cpu_s": round(collector_cpu, 2),
        "exit_code": proc.returncode,
        "machine": f"{platform.machine()} {psutil.cpu_count()} cpus "
        f"{round(psutil.virtual_memory().total / 2**30)} GiB, "
        f"Python {platform.python_version()}, client and collector on the same cores",
    }
    if result["lost"] or proc.returncode:
        print(err[-2000:], file=sys.stderr)
    print(json.dumps(result))


def _wait_ready(port: int, proc: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"collector exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("collector did not start within 30 s")


if __name__ == "__main__":
    main()
