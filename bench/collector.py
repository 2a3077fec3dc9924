"""Collector: throughput, memory, and what is lost when things go wrong; before vs after.

Run it::

    .venv/bin/python bench/collector.py [--pairs 20000] [--connections 32]
    git worktree add /tmp/collector-before main
    .venv/bin/python bench/collector.py --compare /tmp/collector-before   # both, one run

Every scenario starts fresh collector processes of the tree ``--root`` names (default:
this one; ``--compare`` runs the same scenarios against a second tree afterwards) on
127.0.0.1, with a local store in a temp dir in which a model ``bench`` is registered:

1. throughput: ``2 x pairs`` binary-mode events over ``--connections`` keep-alive
   connections from one asyncio client, as fast as it goes; SIGTERM; rows in the store
   -> ``events_per_s``, ``rss_mb`` (collector peak), ``lost``. The same with the
   write-ahead log on tmpfs (fsync ~free) -> ``events_per_s_tmpfs_wal``: the gap to
   ``events_per_s`` is what fsync costs.
2. kill -9: the tree's own emitter (``serving/payload_log.py``, in a driver process)
   logs 6,000 answered requests at ~1,000/s; at 40 % the collector is killed -9 and
   started again 1 s later on the same port and data dir -> ``kill9_lost``: answered
   requests whose row is not in the store at the end.
3. restart: the same with SIGTERM -> ``restart_lost``.
4. poisoned batch: one batch of 200 good pairs plus one pair whose response names
   model_version "99999999999999999999" -> ``poisoned_batch_lost`` (good rows missing).
5. replicas: two collectors on two ports, the events alternating between them (so the
   halves of every pair are split), 10 % of the pairs sent again whole to one replica
   (a retry) -> ``replicas_lost``, and ``duplicated``: rows read twice (here and in 2-3);
   ``stored_twice``: rows in the paired log files more than once, which the read drops.
6. unpaired: 30 request halves of 8 MB whose responses never come -> ``unpaired_rss_mb``.
7. store down: S3 (moto, in this process) stops before SIGTERM and is back before the
   next start -> ``store_down_lost``.

Rows are counted with the tree's own ``read_logs`` in a subprocess, so "before" counts as
that tree's drift job would (no pairing of halves, no dedupe). The LAST stdout line is one
JSON object with every figure (and ``before``: the same for ``--compare``).

The throughput client is a bare HTTP/1.1 writer on uvloop, not httpx: it shares the cores
with the collector, and a heavier client would measure itself (``client_cpu_s``).
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
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from driftloop.ports import free_port  # noqa: E402

DEADLINE_S = 180  # one throughput run, including start-up and the final flush
REQ, RESP = "org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"
BATCH = {"content-type": "application/cloudevents-batch+json"}
FEATURES = {"temp": "numeric", "hum": "numeric", "hour": "numeric", "weekday": "numeric"}
FEATURES |= {"season": "categorical"}

# The driver: the tree's own emitter, as the predictor runs it, logging paced requests.
DRIVER = """
import json, sys, time
from prometheus_client import REGISTRY
from serving.payload_log import LoggerConfig, PayloadEmitter
url, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
e = PayloadEmitter(LoggerConfig(url=url, inference_service="bench"), "bench")
req = json.dumps({"instances": [{"temp": 0.5, "hum": 0.3, "hour": 7, "weekday": 2,
                                 "season": "summer"}]}).encode()
resp = json.dumps({"predictions": [42.0], "model_name": "bench", "model_version": "1"}).encode()
t0 = time.monotonic()
for i in range(n):
    e.emit(f"k-{i}", req, resp)
    time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
e.close(timeout=30)
get = lambda m: REGISTRY.get_sample_value(m, {"model": "bench"}) or 0
print(json.dumps({k: get(f"driftloop_payload_events_{k}_total")
                  for k in ("sent", "failed", "dropped", "retried")}))
"""
COUNT = """
import json, sys
from driftloop.payloads import read_logs
from driftloop.store import LocalStore
df = read_logs(LocalStore(__import__("pathlib").Path(sys.argv[1])), "bench")
print(json.dumps({"rows": len(df), "ids": sorted(set(df["request_id"]))}))
"""


class Tree:
    """The collector code of one checkout, run as subprocesses."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root, self.tmp = root, tmp
        help_text = self._run(["-m", "monitoring.collector", "--help"]).stdout
        self.has_wal = "--data-dir" in help_text

    def env(self, store: Path | str) -> dict[str, str]:
        return {**os.environ, "DRIFTLOOP_STORE_URI": str(store), "PYTHONPATH": str(self.root)}

    def _run(self, args: list[str], store: Path | None = None) -> subprocess.CompletedProcess:
        env = self.env(store or self.tmp / "none")
        return subprocess.run(
            [sys.executable, *args], env=env, cwd=self.root, capture_output=True, text=True
        )

    def start(self, store: Path | str, port: int, data: Path, *flags: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "monitoring.collector", "--port", str(port), *flags]
        if self.has_wal:
            cmd += ["--data-dir", str(data)]
        log = open(self.tmp / f"collector-{port}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=self.env(store), cwd=self.root, stderr=log)
        _wait_ready(port, proc)
        return proc

    def count(self, store: Path) -> dict:
        out = self._run(["-c", COUNT, str(store)], store)
        if out.returncode:
            raise SystemExit(f"counting failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def drive(self, url: str, n: int, rate: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, url, str(n), str(rate)],
            env=self.env(self.tmp / "none"),
            cwd=self.root,
            stdout=subprocess.PIPE,
            text=True,
        )


def stored_rows(store: Path) -> int:
    """Rows stored, copies included: in the paired log files, and request halves that have
    a response half (one instance each here). What the read's dedupe has to drop."""
    from collections import Counter

    import pyarrow.parquet as pq

    files = list((store / "logs" / "bench").rglob("*.parquet"))
    paired = sum(pq.read_metadata(f).num_rows for f in files if "halves" not in f.parts)

    def ids(kind: str) -> Counter:
        found = [f for f in files if "halves" in f.parts and kind in f.parts]
        return Counter(i for f in found for i in pq.read_table(f)["request_id"].to_pylist())

    requests, responses = ids("request"), ids("response")
    return paired + sum(n for rid, n in requests.items() if rid in responses)


def new_store(tmp: Path) -> Path:
    """A store with the model ``bench`` registered (a committed version, a schema)."""
    from driftloop.formats import FeatureSchema, Lineage, TabularSchema, VersionFiles
    from driftloop.registry import Registry
    from driftloop.store import LocalStore

    store = tmp / f"store-{uuid.uuid4().hex[:8]}"
    src = tmp / f"version-{uuid.uuid4().hex[:8]}"
    src.mkdir()
    feats = [
        FeatureSchema(name=n, kind=k, datatype="FP64" if k == "numeric" else "BYTES")
        for n, k in FEATURES.items()
    ]
    schema = TabularSchema(model="bench", task="regression", target="cnt", features=feats)
    (src / VersionFiles.SCHEMA).write_bytes(schema.dump())
    Registry(LocalStore(store)).register("bench", src, Lineage(), "tabular-torch")
    return store


# -- the raw client ---------------------------------------------------------------------
def _event(kind: str, rid: str, body: bytes) -> bytes:
    head = (
        "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"ce-specversion: 1.0\r\nce-type: org.kubeflow.serving.inference.{kind}\r\n"
        f"ce-id: {rid}\r\nce-source: http://bench\r\nce-time: 2024-05-01T12:00:00Z\r\n"
        "ce-inferenceservicename: bench\r\nce-namespace: default\r\n"
        f"ce-component: predictor\r\nce-endpoint: default\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _pair(rnd: random.Random, rid: str) -> tuple[bytes, bytes]:
    inst = {
        "temp": rnd.random(),
        "hum": rnd.random(),
        "hour": rnd.randrange(24),
        "season": "summer",
        "weekday": rnd.randrange(7),
    }
    req = json.dumps({"instances": [inst]}).encode()
    resp = json.dumps(
        {"predictions": [rnd.random() * 100], "model_name": "bench", "model_version": "1"}
    ).encode()
    return _event("request", rid, req), _event("response", rid, resp)


def _events(pairs: int) -> list[bytes]:
    """Request/response pairs with one instance each; a third arrive response-first."""
    rnd, out = random.Random(0), []
    for i in range(pairs):
        a, b = _pair(rnd, f"bench-{i}")
        out += [b, a] if i % 3 == 0 else [a, b]
    return out


async def _send_all(events: list[tuple[int, bytes]], connections: int) -> int:
    """Send every (port, event), one in flight per connection; returns the non-200s."""
    by_port: dict[int, list[bytes]] = {}
    for port, msg in events:
        by_port.setdefault(port, []).append(msg)
    bad = 0

    async def worker(port: int, it: Iterator[bytes]) -> None:
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

    per = max(1, connections // len(by_port))
    await asyncio.gather(
        *(worker(p, it) for p, msgs in by_port.items() for it in [iter(msgs)] for _ in range(per))
    )
    return bad


def _send(events: list[tuple[int, bytes]], connections: int) -> int:
    import uvloop

    return uvloop.run(asyncio.wait_for(_send_all(events, connections), DEADLINE_S))


def _peak_rss(pid: int, stop: threading.Event, out: list[float]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append(proc.memory_info().rss / 2**20)
        except psutil.Error:
            return
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- the scenarios ------------------------------------------------------------------------
def throughput(tree: Tree, pairs: int, connections: int, data: Path) -> dict:
    store, port = new_store(tree.tmp), free_port()
    proc = tree.start(store, port, data)
    events = [(port, e) for e in _events(pairs)]
    stop, rss = threading.Event(), [0.0]
    threading.Thread(target=_peak_rss, args=(proc.pid, stop, rss), daemon=True).start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    bad = _send(events, connections)
    elapsed, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    collector_cpu = sum(psutil.Process(proc.pid).cpu_times()[:2])
    code = _stop(proc)
    stop.set()
    rows = tree.count(store)["rows"]
    return {
        "events_per_s": round(len(events) / elapsed),
        "rss_mb": round(max(rss), 1),
        "lost": pairs - rows,
        "non_200": bad,
        "seconds": round(elapsed, 2),
        "client_cpu_s": round(client_cpu, 2),
        "collector_cpu_s": round(collector_cpu, 2),
        "exit_code": code,
    }


def crash(tree: Tree, sig: int, n: int = 6_000, rate: float = 1_000.0) -> dict:
    """The emitter logs ``n`` answered requests; the collector gets ``sig`` at 40 % and
    is started again 1 s later on the same port and data dir."""
    store, port, data = new_store(tree.tmp), free_port(), tree.tmp / f"data-{uuid.uuid4().hex}"
    proc = tree.start(store, port, data)
    driver = tree.drive(f"http://127.0.0.1:{port}/", n, rate)
    time.sleep(0.4 * n / rate)
    _stop(proc, sig)
    time.sleep(1.0)
    proc = tree.start(store, port, data)
    out, _ = driver.communicate(timeout=120)
    _stop(proc)
    found = tree.count(store)
    answered = {f"k-{i}" for i in range(n)}
    return {
        "lost": len(answered - set(found["ids"])),
        "duplicated": found["rows"] - len(found["ids"]),
        "stored_twice": max(0, stored_rows(store) - len(found["ids"])),
        "emitter": json.loads(out.strip().splitlines()[-1]),
    }


def poisoned(tree: Tree) -> int:
    store, port = new_store(tree.tmp), free_port()
    proc = tree.start(store, port, tree.tmp / f"data-{uuid.uuid4().hex}")
    events, rnd = [], random.Random(1)
    for i in range(200):
        inst = {"temp": rnd.random(), "hum": 0.5, "hour": 3, "weekday": 1, "season": "summer"}
        resp = {"predictions": [1.0], "model_name": "bench", "model_version": "1"}
        base = {"specversion": "1.0", "id": f"p{i}", "inferenceservicename": "bench"}
        events += [
            {**base, "type": REQ, "data": {"instances": [inst]}},
            {**base, "type": RESP, "data": resp},
        ]
    bad = {"predictions": [1.0], "model_name": "bench", "model_version": "99999999999999999999"}
    base = {"specversion": "1.0", "id": "poison", "inferenceservicename": "bench"}
    inst = {"temp": 0.5, "hum": 0.5, "hour": 3, "weekday": 1, "season": "summer"}
    events[0:0] = [  # a whole pair, first: it would be flushed before the others
        {**base, "type": REQ, "data": {"instances": [inst]}},
        {**base, "type": RESP, "data": bad},
    ]
    httpx.post(f"http://127.0.0.1:{port}/", content=json.dumps(events), headers=BATCH)
    _stop(proc)
    return 200 - len(tree.count(store)["ids"])


def replicas(tree: Tree, pairs: int = 5_000) -> dict:
    store, ports = new_store(tree.tmp), [free_port(), free_port()]
    procs = [tree.start(store, p, tree.tmp / f"data-{uuid.uuid4().hex}") for p in ports]
    rnd, events, k = random.Random(2), [], 0
    for i in range(pairs):
        a, b = _pair(rnd, f"bench-{i}")
        for e in (a, b):  # round-robin over the replicas: every pair is split
            events.append((ports[k % 2], e))
            k += 1
        if i % 10 == 0:  # a retry of the whole pair, to one replica
            events += [(ports[0], a), (ports[0], b)]
    _send(events, 16)
    for p in procs:
        _stop(p)
    found = tree.count(store)
    return {
        "lost": pairs - len(found["ids"]),
        "duplicated": found["rows"] - len(found["ids"]),
        "stored_twice": max(0, stored_rows(store) - len(found["ids"])),
    }


def unpaired_rss(tree: Tree, n: int = 30, mb: int = 8) -> float:
    store, port = new_store(tree.tmp), free_port()
    proc = tree.start(store, port, tree.tmp / f"data-{uuid.uuid4().hex}")
    stop, rss = threading.Event(), [0.0]
    threading.Thread(target=_peak_rss, args=(proc.pid, stop, rss), daemon=True).start()
    big = {"temp": 1.0, "hum": 1.0, "hour": 1, "weekday": 1, "season": "s" * (mb << 20)}
    body = json.dumps({"instances": [big]}).encode()
    _send([(port, _event("request", f"big-{i}", body)) for i in range(n)], 1)
    time.sleep(1.0)
    _stop(proc)
    stop.set()
    return round(max(rss), 1)


def store_down(tree: Tree, pairs: int = 2_000) -> int:
    """S3 in this process (moto keeps its state across a server restart)."""
    from minio import Minio
    from moto.server import ThreadedMotoServer

    from driftloop.payloads import read_logs
    from driftloop.settings import load_settings
    from driftloop.store import open_store

    s3port, port = free_port(), free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3port, verbose=False)
    server.start()
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    Minio(f"127.0.0.1:{s3port}", access_key="t", secret_key="t", secure=False).make_bucket(bucket)
    s3 = {
        "DRIFTLOOP_S3_ENDPOINT": f"127.0.0.1:{s3port}",
        "DRIFTLOOP_S3_SECURE": "false",
        "DRIFTLOOP_S3_ACCESS_KEY": "t",
        "DRIFTLOOP_S3_SECRET_KEY": "t",
        "DRIFTLOOP_S3_REGION": "us-east-1",
    }
    uri = f"s3://{bucket}/store"
    settings = load_settings(
        store_uri=uri, s3_endpoint=s3["DRIFTLOOP_S3_ENDPOINT"], s3_access_key="t",
        s3_secret_key="t", s3_secure=False, s3_region="us-east-1",
    )  # fmt: skip
    local = new_store(tree.tmp)  # copy its registry into S3
    from driftloop.store import LocalStore

    src, dst = LocalStore(local), open_store(settings)
    for key in src.list():
        dst.put(key, src.get(key))
    os.environ.update(s3)  # the collector subprocesses inherit it
    data = tree.tmp / f"data-{uuid.uuid4().hex}"
    try:
        flags = ("--max-age", "600", "--shutdown-retry", "2") if tree.has_wal else ()
        proc = tree.start(uri, port, data, *flags)
        _send([(port, e) for e in _events(pairs)], 8)
        server.stop()
        _stop(proc)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3port, verbose=False)
        server.start()
        _stop(tree.start(uri, port, data))
        return pairs - read_logs(dst, "bench")["request_id"].nunique()
    finally:
        server.stop()
        for k in s3:
            os.environ.pop(k, None)


def run_all(tree: Tree, args: argparse.Namespace) -> dict:
    only = set(args.only.split(",")) if args.only else None
    out = throughput(tree, args.pairs, args.connections, tree.tmp / "data-throughput")
    if tree.has_wal:
        with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
            fast = throughput(tree, args.pairs, args.connections, Path(shm))
        out["events_per_s_tmpfs_wal"] = fast["events_per_s"]
    if only == {"throughput"}:
        return out
    k9, rs, rp = crash(tree, signal.SIGKILL), crash(tree, signal.SIGTERM), replicas(tree)
    out |= {
        "kill9_lost": k9["lost"],
        "restart_lost": rs["lost"],
        "poisoned_batch_lost": poisoned(tree),
        "replicas": 2,
        "replicas_lost": rp["lost"],
        "duplicated": k9["duplicated"] + rs["duplicated"] + rp["duplicated"],
        "stored_twice": k9["stored_twice"] + rs["stored_twice"] + rp["stored_twice"],
        "unpaired_rss_mb": unpaired_rss(tree),
        "store_down_lost": store_down(tree),
        "kill9_emitter": k9["emitter"],
        "restart_emitter": rs["emitter"],
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--root", type=Path, default=HERE, help="the tree whose collector runs")
    ap.add_argument("--compare", type=Path, help="a second tree (e.g. main): 'before'")
    ap.add_argument("--only", help="'throughput': skip the failure scenarios")
    args = ap.parse_args()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, root in [("after", args.root), ("before", args.compare)]:
            if root is None:
                continue
            sub = Path(tmp) / name
            sub.mkdir()
            figures = run_all(Tree(root.resolve(), sub), args)
            figures["tree"] = str(root)
            print(json.dumps({name: figures}), flush=True)
            result = figures if name == "after" else {**result, "before": figures}
    result["machine"] = (
        f"{platform.machine()} {psutil.cpu_count()} cpus "
        f"{round(psutil.virtual_memory().total / 2**30)} GiB, "
        f"Python {platform.python_version()}, client and collector on the same cores"
    )
    print(json.dumps(result))


def _wait_ready(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"collector exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("collector did not start within 30 s")


if __name__ == "__main__":
    main()
