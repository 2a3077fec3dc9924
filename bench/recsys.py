"""The recommender loop on MovieLens-100K, with the real parts: quality against baselines,
real-time top-10 latency, when an ANN index is needed, and a replay in time order.

    .venv/bin/python bench/recsys.py            # ~10 min on 2 cores; the last line is JSON

1. **Quality.** The pipeline's steps in-process (``run_inprocess``) train ``recsys-mf`` on
   ``data/movielens_100k.yaml`` up to 1998-01-01 (the first 3.4 months) and register it; its
   test NDCG@10 and Recall@10 (the latest 15 % of the interactions, by time) are compared
   with the baselines of the same run and split: most-popular and implicit's ALS.
2. **Serving.** One kserve REST server in a subprocess hosts the registered model and a
   no-op ``kserve.Model``; sequential single-user V1 and V2 top-10 requests against
   ``{"instances": [[0.0]]}`` to the no-op, interleaved in rounds.
3. **ANN.** Brute-force top-10 (one matrix-vector product and a partial sort, what the
   model does) over synthetic catalogues of 10k, 100k and 1M items of the model's width.
4. **Replay.** The start model serves 1998-01-01 .. 1998-04-23 in two-week windows: each
   interaction is one request by its user just before it (served by the production model,
   logged with ``write_log_frame`` exactly as the collector writes what the family logs)
   and its feedback label (the item, ``write_labels``, by request id). After each window
   the real drift job (``run_window``, ``data/movielens_policy.yaml``) decides; a trigger
   runs ``InProcessBackend`` (the pipeline's steps: gate against the champion on the same
   recent test window, promotion) on every interaction before the window's end. Served
   NDCG@10 per window is the drift job's quality on feedback. Against it, in the same run:
   never retrained (static) and a calendar (retrained every 4 weeks, gate ignored).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop.data import TIME, load_window  # noqa: E402
from driftloop.formats import VersionFiles, parse_schema  # noqa: E402
from driftloop.monitor import run_window  # noqa: E402
from driftloop.payloads import write_labels, write_log_frame  # noqa: E402
from driftloop.policy import load_policy  # noqa: E402
from driftloop.recsys_metrics import ranking_metrics, relevant_by_user  # noqa: E402
from driftloop.registry import Registry  # noqa: E402
from driftloop.spec import load_spec  # noqa: E402
from driftloop.steps import load_version, run_inprocess, sample_trials  # noqa: E402
from driftloop.store import LocalStore  # noqa: E402
from monitoring.backends import InProcessBackend  # noqa: E402

SPEC = ROOT / "data" / "movielens_100k.yaml"
START = datetime(1998, 1, 1)
END = datetime(1998, 4, 23)
WINDOW = timedelta(days=14)
CALENDAR_EVERY = 2  # windows: every 4 weeks


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- 1. quality ----------------------------------------------------------------------------
def quality(store: LocalStore, spec, trials) -> dict:
    t = time.perf_counter()
    ref, gate = run_inprocess(spec, store, "", START.isoformat(), trials)
    assert ref is not None, gate.summary
    metrics = json.loads(Registry(store).read_file(ref, VersionFiles.METRICS))
    test, base = metrics["test"], metrics["baselines"]
    return {
        "ndcg10": round(test["ndcg10"], 4),
        "recall10": round(test["recall10"], 4),
        "hitrate10": round(test["hitrate10"], 4),
        "map10": round(test["map10"], 4),
        "coverage": round(test["coverage"], 4),
        "popular_ndcg10": round(base["popular"]["ndcg10"], 4),
        "popular_recall10": round(base["popular"]["recall10"], 4),
        "reference_ndcg10": round(base["als"]["ndcg10"], 4),
        "reference_recall10": round(base["als"]["recall10"], 4),
        "reference": "implicit 0.7.3 ALS (64 factors, 15 iterations)",
        "pipeline_s": round(time.perf_counter() - t, 1),
        "gate": gate.summary,
    }


# -- 2. serving ----------------------------------------------------------------------------
def serve(port: int, store: str, name: str) -> None:
    import logging

    from kserve import Model

    from serving.artifacts import load_from_registry
    from serving.model import Predictor
    from serving.server import LocalServer

    class Noop(Model):
        def __init__(self) -> None:
            super().__init__("noop")
            self.ready = True

        def predict(self, payload: dict, headers: dict | None = None) -> dict:
            return {"predictions": [0.0]}

    reg = Registry(LocalStore(Path(store)))
    ref = reg.resolve(name)
    logging.getLogger().setLevel(logging.WARNING)
    LocalServer([Noop(), Predictor(name, lambda: load_from_registry(reg, ref))], port=port).run()


def latency(store: Path, name: str, users: list[str], n: int = 2000, warmup: int = 200) -> dict:
    import httpx

    from driftloop.ports import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(store), name],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    bodies = {
        "noop": lambda u: ("/v1/models/noop:predict", {"instances": [[0.0]]}),
        "top10_v1": lambda u: (f"/v1/models/{name}:predict", {"instances": [{"user_id": u}]}),
        "top10_v2": lambda u: (
            f"/v2/models/{name}/infer",
            {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": [u]}]},
        ),
    }
    headers = {"content-type": "application/json"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
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
            for make in bodies.values():
                for i in range(warmup):
                    path, body = make(users[i % len(users)])
                    c.post(path, content=json.dumps(body), headers=headers).raise_for_status()
            times: dict[str, list[float]] = {k: [] for k in bodies}
            for r in range(10):  # rounds: a slow phase of the machine hits every target
                for k, make in bodies.items():
                    for i in range(n // 10):
                        path, body = make(users[(r * n + i) % len(users)])
                        content = json.dumps(body)
                        t = time.perf_counter()
                        c.post(path, content=content, headers=headers).raise_for_status()
                        times[k].append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(10)
    out = {}
    for k, v in times.items():
        out[f"{k}_p50_ms"] = round(1000 * float(np.percentile(v, 50)), 3)
        out[f"{k}_p99_ms"] = round(1000 * float(np.percentile(v, 99)), 3)
    return out


# -- 3. ANN --------------------------------------------------------------------------------
def brute_force(width: int, sizes=(10_000, 100_000, 1_000_000), queries: int = 50) -> dict:
    """p50/p99 of one top-10 over a synthetic catalogue: the model's own computation (float32
    matrix-vector product, float64 normalisation, partial sort), one thread."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    out = {}
    with threadpool_limits(1):
        for m in sizes:
            rows = rng.normal(size=(m, width)).astype(np.float32)
            q = rng.normal(size=(queries, width)).astype(np.float32)
            times = []
            for j in range(queries):
                t = time.perf_counter()
                s = (rows @ q[j]).astype(np.float64)
                best = np.argpartition(-s, 9)[:10]
                best[np.argsort(-s[best])]
                times.append(time.perf_counter() - t)
            key = f"{m // 1000}k" if m < 1_000_000 else f"{m // 1_000_000}m"
            out[f"brute_top10_{key}_p50_ms"] = round(1000 * float(np.median(times)), 2)
            out[f"brute_top10_{key}_p99_ms"] = round(1000 * float(np.percentile(times, 99)), 2)
            out[f"catalogue_{key}_mb"] = round(rows.nbytes / 2**20)
            del rows
    return out


# -- 4. replay -----------------------------------------------------------------------------
def windows() -> list[tuple[datetime, datetime]]:
    out, lo = [], START
    while lo < END:
        out.append((lo, min(lo + WINDOW, END)))
        lo += WINDOW
    return out


def online_quality(model, rows: pd.DataFrame, spec) -> float:
    """NDCG@10 as the drift job measures it on feedback: per user with interactions in the
    window, their (first) list against what they then interacted with."""
    opts = spec.interaction_options
    rel = relevant_by_user(rows[opts.user].tolist(), rows[opts.item].tolist())
    users = list(rel)
    pred = model.predict({opts.user: users})
    return ranking_metrics(list(pred["items"]), [rel[u] for u in users], model.catalogue)["ndcg10"]


def serve_window(store: LocalStore, spec, rows: pd.DataFrame) -> int:
    """Serve every interaction's user with the production model just before it; log what the
    family logs and post the interaction as feedback for that request."""
    registry = Registry(store)
    ref = registry.resolve(spec.name)
    model = load_version(registry, ref)
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    _, logged = model.predict_logged(rows)
    frame = pd.DataFrame(logged)
    frame[TIME] = rows[TIME].to_numpy()
    frame["prediction"] = np.nan
    frame["request_id"] = [f"r{int(t.value)}-{i}" for i, t in enumerate(rows[TIME])]
    write_log_frame(store, spec.name, ref.version, "default", schema, frame)
    labels = [
        {"request_id": rid, "row": 0, "label": item, "time": t.isoformat()}
        for rid, item, t in zip(frame["request_id"], rows[spec.target], rows[TIME], strict=True)
    ]
    write_labels(store, spec.name, labels)
    return ref.version


def replay(store: LocalStore, spec, trials, data: pd.DataFrame) -> dict:
    from driftloop.families import get_family

    policy = load_policy(ROOT / "data" / "movielens_policy.yaml")
    backend = InProcessBackend(store, spec, trials)
    static = load_version(Registry(store), Registry(store).resolve(spec.name))
    family = get_family("recsys-mf")
    calendar, calendar_retrains = static, 0
    per_window = []
    for w, (lo, hi) in enumerate(windows()):
        rows = data[(data[TIME] >= lo) & (data[TIME] < hi)].reset_index(drop=True)
        if w and w % CALENDAR_EVERY == 0:  # the calendar: retrain on everything so far
            ref, _ = run_inprocess(
                spec,
                LocalStore(store.root / "calendar"),
                "",
                lo.isoformat(),
                trials,
                obey_gate=False,
            )
            assert ref is not None
            calendar = load_version(Registry(LocalStore(store.root / "calendar")), ref)
            calendar_retrains += 1
        version = serve_window(store, spec, rows)
        rec = run_window(
            store,
            spec.name,
            lo,
            hi,
            policy=policy,
            backend=backend,
            retrain_days=400,
            report_rows=5_000,
        )
        served = (rec.quality or {}).get("ndcg10", float("nan"))
        per_window.append(
            {
                "window": f"{lo:%Y-%m-%d}",
                "rows": len(rows),
                "served_version": version,
                "served_ndcg10": round(served, 4),
                "static_ndcg10": round(online_quality(static, rows, spec), 4),
                "calendar_ndcg10": round(online_quality(calendar, rows, spec), 4),
                "signals": {c: round(d.score, 3) for c, d in rec.drift.columns.items()},
                "drifted": rec.drifted_columns,
                "trigger": rec.trigger,
                "reasons": rec.reasons[:2],
            }
        )
        log(f"   {per_window[-1]}")
    del family
    mean = lambda k: round(float(np.nanmean([p[k] for p in per_window])), 4)  # noqa: E731
    return {
        "backtest_ndcg10": mean("served_ndcg10"),
        "static_ndcg10": mean("static_ndcg10"),
        "calendar_ndcg10": mean("calendar_ndcg10"),
        "retrains": len(backend.outcomes),
        "promoted": Registry(store).alias(spec.name, "production"),
        "calendar_retrains": calendar_retrains,
        "retrain_outcomes": list(backend.outcomes.values()),
        "windows": per_window,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    import torch

    torch.set_num_threads(1)
    out: dict = {}
    spec = load_spec(SPEC)
    trials = sample_trials(1, family="recsys-mf")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = LocalStore(root / "store")
        log("1. pipeline steps on MovieLens-100K up to 1998-01-01, baselines on the same split")
        out |= quality(store, spec, trials)
        log(f"   {out}")
        data = load_window(spec, None, None)
        log("2. serving latency (subprocess server), top-10 over the whole catalogue")
        users = data[data[TIME] < START]["user_id"].drop_duplicates().tolist()
        out |= latency(root / "store", spec.name, users)
        out["top10_p50_ms"], out["top10_p99_ms"] = out["top10_v1_p50_ms"], out["top10_v1_p99_ms"]
        log(f"   {out}")
        log("3. brute-force top-10 on synthetic catalogues")
        model = load_version(Registry(store), Registry(store).resolve(spec.name))
        out |= brute_force(int(model._rows.shape[1]))
        log(f"   {out}")
        log("4. the replay: two-week windows 1998-01-01 .. 1998-04-23")
        out |= replay(store, spec, trials, data)
    out["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
