"""Serving latency on loopback: our predictor vs a no-op kserve.Model, logging on vs off,
V1 and V2 over HTTP and the Open Inference Protocol over gRPC.

    .venv/bin/python bench/serving.py [--n 2000] [--warmup 200]

1. Train a small bike-sharing model in-process (default architecture, 2 epochs: latency
   depends on the architecture, not on how well it fits) and register it in a temp store.
2. Start one kserve REST server and driftloop's gRPC server on 127.0.0.1 in a subprocess
   (so the client does not share its GIL) hosting: ``bike`` (our predictor), ``bike-logged``
   (payload logging to a fake collector, itself another subprocess answering 200),
   ``bike-shadowed`` (the same, with the model registered again as v2 scoring in shadow,
   ``serving.shadow``) and ``noop`` (returns a constant, V1 or V2).
3. Sequential requests over one persistent connection per protocol (httpx; tritonclient's
   gRPC client, which sends raw contents as standard clients do); each figure is measured
   after ``--warmup`` requests, the seven single-row targets interleaved in ten rounds so
   that a slow phase of the machine cannot favour one of them. The LAST stdout line is
   one JSON object with the figures.

Goals: v1 single-row p50 <= 1.3 x no-op p50; logging adds <= 10 % to p50; gRPC p50 <=
V2 HTTP p50; a shadow adds <= 15 % to the logged p50 (``shadow_overhead``: shadowed vs
logged, both logging, side by side in the same run; the shadow's own rows are logged too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def prepare(root: Path) -> tuple[Path, list[dict]]:
    """Train + register; returns (store dir, 1,000 held-out rows as V1 instances)."""
    from driftloop.data import load_window, split_by_time
    from driftloop.formats import Lineage
    from driftloop.spec import load_spec
    from driftloop.steps import register, train_trial
    from driftloop.store import LocalStore

    # Without the spec's business rules: this measures the serving path against the no-op;
    # the rules' own cost is measured separately (rules_ms_per_request).
    spec = load_spec(ROOT / "data" / "bike_sharing.yaml").model_copy(update={"rules": None})
    s = split_by_time(load_window(spec, "2011-01-01", "2011-07-01"), spec)
    s.train.to_parquet(root / "train.parquet", index=False)
    s.validation.to_parquet(root / "validation.parquet", index=False)
    s.test.to_parquet(root / "test.parquet", index=False)
    trial = {"family": "tabular-torch", "params": {"max_epochs": 2}}
    train_trial(root / "train.parquet", root / "validation.parquet", spec, trial, root / "model")
    for promote in (True, False):  # v1 serves; v2 (the same architecture) shadows it
        register(
            root / "model",
            root / "train.parquet",
            root / "test.parquet",
            spec,
            LocalStore(root / "store"),
            Lineage(),
            promote=promote,
        )
    rows = json.loads(s.test[spec.features].head(1000).to_json(orient="records"))
    return root / "store", rows


def serve(port: int, grpc_port: int, store: str, logger_url: str) -> None:
    """The server subprocess."""
    import logging

    import torch
    from kserve import Model
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from driftloop.registry import Registry, VersionRef
    from driftloop.store import LocalStore
    from serving.artifacts import load_from_registry
    from serving.model import Predictor
    from serving.options import DEFAULT_TORCH_THREADS
    from serving.payload_log import LoggerConfig, PayloadEmitter
    from serving.server import LocalServer
    from serving.shadow import Shadow

    class Noop(Model):
        def __init__(self) -> None:
            super().__init__("noop")
            self.ready = True

        def predict(
            self, payload: dict | InferRequest, headers: dict | None = None
        ) -> dict | InferResponse:
            if isinstance(payload, InferRequest):
                out = InferOutput("prediction", [1], "FP64", [0.0])
                return InferResponse(
                    "noop", "noop", [out], use_binary_outputs=payload.use_binary_outputs
                )
            return {"predictions": [0.0]}

    torch.set_num_threads(DEFAULT_TORCH_THREADS)  # as `python -m serving` / `driftloop serve`
    reg = Registry(LocalStore(Path(store)))
    ref = reg.resolve("bike-sharing")
    emitter = PayloadEmitter(LoggerConfig(url=logger_url, inference_service="bike"), "bike-logged")
    shadow_emitter = PayloadEmitter(
        LoggerConfig(url=logger_url, inference_service="bike"), "bike-shadowed"
    )
    v2 = VersionRef("bike-sharing", 2)
    shadow = Shadow("bike-shadowed", 2, lambda: load_from_registry(reg, v2))
    models = [
        Noop(),
        Predictor("bike", lambda: load_from_registry(reg, ref)),
        Predictor("bike-logged", lambda: load_from_registry(reg, ref), emitter=emitter),
        Predictor(
            "bike-shadowed",
            lambda: load_from_registry(reg, ref),
            emitter=shadow_emitter,
            shadow=shadow,
        ),
    ]
    logging.getLogger().setLevel(logging.WARNING)  # no per-request log lines
    LocalServer(models, port=port, grpc_port=grpc_port).run()


def http(client, path: str, body: dict):
    """One HTTP target for measure: a call that posts ``body`` and fails on an error."""
    content, headers = json.dumps(body).encode(), {"content-type": "application/json"}
    return lambda: client.post(path, content=content, headers=headers).raise_for_status()


def grpc_target(client, model: str, row: dict):
    """One gRPC target: tritonclient's infer of one row, raw contents (as it always sends)."""
    import numpy as np
    import tritonclient.grpc as tgrpc

    inputs = []
    for k, v in row.items():
        t = tgrpc.InferInput(k, [1], "BYTES" if isinstance(v, str) else "FP64")
        t.set_data_from_numpy(
            np.array([v.encode()], dtype=np.object_)
            if isinstance(v, str)
            else np.array([v], dtype=np.float64)
        )
        inputs.append(t)
    return lambda: client.infer(model, inputs)


def measure(targets: dict, n: int, warmup: int) -> dict:
    """Sequential calls to each target (name -> a call that makes one request and raises on
    failure), interleaved in rounds of n/10 so that drift in the machine's state over the
    run hits every target alike."""
    for call in targets.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {k: [] for k in targets}
    busy = dict.fromkeys(targets, 0.0)
    rounds = 10
    for r in range(rounds):
        for k, call in targets.items():
            t0 = time.perf_counter()
            for _ in range(n // rounds + (r < n % rounds)):
                t = time.perf_counter()
                call()
                times[k].append(time.perf_counter() - t)
            busy[k] += time.perf_counter() - t0
    out = {}
    for k, ts in times.items():
        ts.sort()
        out[k] = {
            "p50_ms": 1000 * ts[len(ts) // 2],
            "p99_ms": 1000 * ts[min(len(ts) - 1, int(len(ts) * 0.99))],
            "rps": len(ts) / busy[k],
        }
    return out


def shadow_counts(metrics: str) -> tuple[int, int, int]:
    """(scored, skipped, predict errors) of the bench's shadow, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    got = {"scored": 0.0, "skipped": 0.0, "errors": 0.0}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.labels.get("model") != "bike-shadowed" or not s.name.endswith("_total"):
                continue
            for what in got:
                if s.name == f"driftloop_shadow_{what}_total":
                    got[what] += s.value
    return int(got["scored"]), int(got["skipped"]), int(got["errors"])


def rules_ms_per_request(rows: list[dict], n: int = 500) -> float:
    """p50 of evaluating data/bike_rules.yaml on one request's row (compiled once by load_rules)."""
    import pandas as pd

    from driftloop.rules import load_rules

    rules = load_rules((ROOT / "data" / "bike_rules.yaml").read_text())
    frame = pd.DataFrame(rows[:1])
    times = []
    for _ in range(n):
        t = time.perf_counter()
        rules.evaluate(frame)
        times.append(time.perf_counter() - t)
    return float(sorted(times)[n // 2] * 1000)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--batch-n", type=int, default=200, help="1,000-row requests to time")
    p.add_argument(
        "--serve",
        nargs=4,
        metavar=("PORT", "GRPC_PORT", "STORE", "LOGGER_URL"),
        help=argparse.SUPPRESS,
    )
    args = p.parse_args()
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), args.serve[2], args.serve[3])
        return

    import httpx
    import tritonclient.grpc as tgrpc

    from driftloop.ports import free_port

    with tempfile.TemporaryDirectory() as tmp:
        store, rows = prepare(Path(tmp))
        rport, sport, gport = free_port(), free_port(), free_port()
        procs = [
            subprocess.Popen([sys.executable, "-c", RECEIVER, str(rport)]),
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    str(sport),
                    str(gport),
                    str(store),
                    f"http://127.0.0.1:{rport}/",
                ],
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            with (
                httpx.Client(base_url=f"http://127.0.0.1:{sport}", timeout=30) as c,
                tgrpc.InferenceServerClient(f"127.0.0.1:{gport}") as g,
            ):
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if c.get("/v2/health/ready").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("server did not start")
                    time.sleep(0.2)
                one = {"instances": rows[:1]}
                v2 = {
                    "inputs": [
                        {
                            "name": k,
                            "shape": [1],
                            "datatype": "BYTES" if isinstance(v, str) else "FP64",
                            "data": [v],
                        }
                        for k, v in rows[0].items()
                    ]
                }
                n, w = args.n, args.warmup
                single = measure(
                    {
                        "noop": http(c, "/v1/models/noop:predict", one),
                        "v1": http(c, "/v1/models/bike:predict", one),
                        "logged": http(c, "/v1/models/bike-logged:predict", one),
                        "shadowed": http(c, "/v1/models/bike-shadowed:predict", one),
                        "v2": http(c, "/v2/models/bike/infer", v2),
                        "grpc": grpc_target(g, "bike", rows[0]),
                        "grpc_noop": grpc_target(g, "noop", rows[0]),
                    },
                    n,
                    w,
                )
                noop, v1, logged, v2r = (single[k] for k in ("noop", "v1", "logged", "v2"))
                grpc, grpc_noop = single["grpc"], single["grpc_noop"]
                shadowed = single["shadowed"]
                scored, skipped, failed = shadow_counts(c.get("/metrics").text)
                batch = measure(
                    {"batch": http(c, "/v1/models/bike:predict", {"instances": rows})},
                    args.batch_n,
                    20,
                )["batch"]
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    out = {
        "v1_p50_ms": round(v1["p50_ms"], 3),
        "v1_p99_ms": round(v1["p99_ms"], 3),
        "v1_rps": round(v1["rps"], 1),
        "v1_batch1000_p50_ms": round(batch["p50_ms"], 3),
        "v2_p50_ms": round(v2r["p50_ms"], 3),
        "v2_p99_ms": round(v2r["p99_ms"], 3),
        "grpc_p50_ms": round(grpc["p50_ms"], 3),
        "grpc_p99_ms": round(grpc["p99_ms"], 3),
        "grpc_rps": round(grpc["rps"], 1),
        "grpc_noop_p50_ms": round(grpc_noop["p50_ms"], 3),
        "grpc_noop_p99_ms": round(grpc_noop["p99_ms"], 3),
        "grpc_vs_v2_p50": round(grpc["p50_ms"] / v2r["p50_ms"], 3),
        "grpc_vs_grpc_noop_p50": round(grpc["p50_ms"] / grpc_noop["p50_ms"], 3),
        "noop_p50_ms": round(noop["p50_ms"], 3),
        "noop_p99_ms": round(noop["p99_ms"], 3),
        "noop_rps": round(noop["rps"], 1),
        "logged_p50_ms": round(logged["p50_ms"], 3),
        "ratio_p50": round(v1["p50_ms"] / noop["p50_ms"], 3),
        "logging_overhead": round(logged["p50_ms"] / v1["p50_ms"] - 1, 3),
        "shadowed_p50_ms": round(shadowed["p50_ms"], 3),
        "shadowed_p99_ms": round(shadowed["p99_ms"], 3),
        "shadow_overhead": round(shadowed["p50_ms"] / logged["p50_ms"] - 1, 3),
        "shadow_overhead_p99": round(shadowed["p99_ms"] / logged["p99_ms"] - 1, 3),
        # Of the shadowed target's requests (warm-up included): scored by the shadow, or
        # skipped because its queue was full; a shadow that skips would look cheap.
        "shadow_scored": scored,
        "shadow_skipped": skipped,
        "shadow_errors": failed,
        "rules_ms_per_request": round(rules_ms_per_request(rows), 3),
        "requests_per_measurement": n,
        "warmup": w,
        "batch_requests": args.batch_n,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
