"""Drift on a 1,000,000 x 20 window against a 100,000-row reference: driftloop vs raw
numpy/scipy vs Evidently's DataDriftPreset.

    .venv/bin/python bench/drift.py                 # all modes; last line is JSON
    .venv/bin/python bench/drift.py --skip-evidently

Each mode runs in its own subprocess so its peak RSS (getrusage maxrss) is its own:

- precompute: ``reference_statistics`` on the reference sample -> stats.json (registration)
- job: ``column_drift(stats.json, current.parquet)`` -- the drift job's path, Parquet read
  one column at a time
- numpy: the same tests done the plain way on the same Parquet columns: scipy's
  ``wasserstein_distance`` / reference std (Evidently's norm) and scipy's ``jensenshannon``
  on category shares (counted with Arrow's hash count, the fastest raw way for strings);
  the low-cardinality numeric column uses JS on value shares, as Evidently does
- evidently: ``Report([DataDriftPreset(columns=features), ValueDrift("prediction")])`` on
  the full frames, with a timeout

``decisions_match``: the job's per-column drifted flags, prediction drift and dataset drift
equal Evidently's (and the numpy baseline's). Timings on a shared 2-core machine are noisy:
the job and numpy modes run ``--repeat`` times and report the best.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from driftloop.formats import TabularSchema

N_REF, N_CUR = 100_000, 1_000_000
NUMERIC = [f"n{i}" for i in range(13)] + ["flag"]  # flag: 0/1 -> JS on value shares
CATEGORICAL = [f"c{i}" for i in range(6)]


def schema() -> TabularSchema:
    """Imported lazily: each measurement's RSS starts without driftloop."""
    from driftloop.formats import TabularSchema

    return TabularSchema.of_columns(NUMERIC, CATEGORICAL)


# Mean shifts (in std units) of the current window; a few sit near the 0.1 threshold.
SHIFTS = {"n0": 0.5, "n1": 0.2, "n2": 0.12, "n3": 0.08, "n4": 0.05}


def make_data(d: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n, current in (("reference", N_REF, False), ("current", N_CUR, True)):
        cols: dict[str, pa.Array] = {}
        for i, c in enumerate(NUMERIC[:-1]):
            x = rng.normal(SHIFTS.get(c, 0) if current else 0, 1 + 0.1 * i, n)
            if i % 4 == 3:
                x = np.round(x * 10) / 10  # many ties, as in real sensors
            x[rng.random(n) < 0.001] = np.nan
            cols[c] = pa.array(x, from_pandas=True)
        cols["flag"] = pa.array((rng.random(n) < (0.35 if current else 0.3)).astype(float))
        for i, c in enumerate(CATEGORICAL):
            k = 5 + 10 * i
            p = np.ones(k) / k
            if current and i == 0:
                p = np.linspace(1, 3, k) / np.linspace(1, 3, k).sum()
            cats = np.array([f"{c}_{j}" for j in range(k)], dtype=object)
            cols[c] = pa.array(cats[rng.choice(k, n, p=p)], pa.string())
        cols["prediction"] = pa.array(rng.normal(0.15 if current else 0, 1, n))
        pq.write_table(pa.table(cols), d / f"{name}.parquet", row_group_size=131_072)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def decisions_of(result) -> dict:
    cols = {c: r.drifted for c, r in result.columns.items()}
    return {
        "columns": cols,
        "prediction": result.prediction.drifted,
        "dataset_drift": result.dataset_drift,
    }


def mode_precompute(d: Path) -> dict:
    import pandas as pd

    from driftloop.drift import reference_statistics, save_statistics

    ref = pd.read_parquet(d / "reference.parquet")
    t = time.perf_counter()
    save_statistics(reference_statistics(ref, schema()), d / "stats.json")
    return {"s": time.perf_counter() - t, "stats_kb": (d / "stats.json").stat().st_size / 1024}


def mode_job(d: Path, repeat: int) -> dict:
    from driftloop.drift import column_drift, load_statistics

    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        stats = load_statistics((d / "stats.json").read_bytes())
        result = column_drift(stats, d / "current.parquet", schema())
        best = min(best, time.perf_counter() - t)
    return {
        "s": best,
        "decisions": decisions_of(result),
        "scores": {c: r.score for c, r in result.columns.items()},
    }


def mode_numpy(d: Path, repeat: int) -> dict:
    import pyarrow.compute as pc
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    def numeric(path: Path, c: str) -> np.ndarray:
        x = pq.read_table(path, columns=[c]).column(c).to_numpy()
        return x[np.isfinite(x)]

    def shares(values: list, counts: list) -> dict:
        total = sum(counts)
        return {v: n / total for v, n in zip(values, counts, strict=True) if v is not None}

    def js(r: dict, c: dict) -> float:
        keys = list(set(r) | set(c))
        return float(jensenshannon([r.get(k, 0) for k in keys], [c.get(k, 0) for k in keys]))

    best, drifted = float("inf"), {}
    for _ in range(repeat):
        t = time.perf_counter()
        for c in [*NUMERIC, "prediction"]:
            r, x = numeric(d / "reference.parquet", c), numeric(d / "current.parquet", c)
            if c == "flag":
                ur, nr = np.unique(r, return_counts=True)
                ux, nx = np.unique(x, return_counts=True)
                score = js(shares(ur.tolist(), nr.tolist()), shares(ux.tolist(), nx.tolist()))
            else:
                score = wasserstein_distance(r, x) / max(float(np.std(r)), 0.001)
            drifted[c] = bool(score >= 0.1)
        for c in CATEGORICAL:
            vr = pc.value_counts(pq.read_table(d / "reference.parquet", columns=[c]).column(c))
            vx = pc.value_counts(pq.read_table(d / "current.parquet", columns=[c]).column(c))
            sr = shares(vr.field("values").to_pylist(), vr.field("counts").to_pylist())
            sx = shares(vx.field("values").to_pylist(), vx.field("counts").to_pylist())
            drifted[c] = bool(js(sr, sx) >= 0.1)
        best = min(best, time.perf_counter() - t)
    pred = drifted.pop("prediction")
    share = sum(drifted.values()) / len(drifted)
    return {
        "s": best,
        "decisions": {"columns": drifted, "prediction": pred, "dataset_drift": share >= 0.5},
    }


def mode_evidently(d: Path) -> dict:
    import pandas as pd

    from driftloop.drift import _import_evidently, evidently_decisions

    _import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    features = NUMERIC + CATEGORICAL
    ref, cur = pd.read_parquet(d / "reference.parquet"), pd.read_parquet(d / "current.parquet")
    t = time.perf_counter()
    definition = DataDefinition(
        numerical_columns=NUMERIC + ["prediction"],
        categorical_columns=CATEGORICAL,
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )
    snap = Report(
        [DataDriftPreset(columns=features), ValueDrift(column="prediction")], include_tests=True
    ).run(Dataset.from_pandas(cur, definition), Dataset.from_pandas(ref, definition))
    ev = evidently_decisions(snap)
    s = time.perf_counter() - t
    cols = {c: v["drifted"] for c, v in ev["columns"].items()}
    return {
        "s": s,
        "decisions": {
            "columns": {c: cols[c] for c in features},
            "prediction": cols["prediction"],
            "dataset_drift": ev["dataset_drift"],
        },
        "scores": {c: v["score"] for c, v in ev["columns"].items()},
    }


def child(mode: str, d: Path, repeat: int, timeout: float = 900) -> dict | None:
    cmd = [sys.executable, __file__, "--mode", mode, "--dir", str(d), "--repeat", str(repeat)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        print(f"{mode}: timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    except subprocess.CalledProcessError as e:
        print(f"{mode} failed:\n{e.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["precompute", "job", "numpy", "evidently"])
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-evidently", action="store_true")
    args = ap.parse_args()
    if args.mode:  # child process: one measurement, one JSON line
        fn = {
            "precompute": lambda: mode_precompute(args.dir),
            "job": lambda: mode_job(args.dir, args.repeat),
            "numpy": lambda: mode_numpy(args.dir, args.repeat),
            "evidently": lambda: mode_evidently(args.dir),
        }[args.mode]
        out = fn()
        print(json.dumps(out | {"rss_mb": maxrss_mb()}))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        make_data(d)
        print(f"data: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        pre = child("precompute", d, 1)
        job = child("job", d, args.repeat)
        npy = child("numpy", d, args.repeat)
        ev = None if args.skip_evidently else child("evidently", d, 1)
    assert pre and job and npy, "a mode failed; see stderr"
    for name, r in (("precompute", pre), ("job", job), ("numpy", npy), ("evidently", ev)):
        if r:
            print(f"{name:10s} {r['s']:7.2f} s  rss {r['rss_mb']:6.0f} MB", file=sys.stderr)
    if ev:
        worst = max(abs(job["scores"][c] - ev["scores"][c]) for c in job["scores"])
        print(f"max |score(job) - score(evidently)| = {worst:.2e}", file=sys.stderr)
    match = job["decisions"] == npy["decisions"] and (
        ev is None or job["decisions"] == ev["decisions"]
    )
    print(
        json.dumps(
            {
                "job_s": round(job["s"], 3),
                "numpy_s": round(npy["s"], 3),
                "ratio": round(job["s"] / npy["s"], 3),
                "rss_mb": round(job["rss_mb"]),
                "numpy_rss_mb": round(npy["rss_mb"]),
                "decisions_match": match,
                "decisions_compared_with": "evidently" if ev else "numpy",
                "drifted": sorted(c for c, v in job["decisions"]["columns"].items() if v),
                "prediction_drift": job["decisions"]["prediction"],
                "evidently_s": round(ev["s"], 2) if ev else None,
                "evidently_rss_mb": round(ev["rss_mb"]) if ev else None,
                "precompute_s": round(pre["s"], 3),
                "stats_kb": round(pre["stats_kb"]),
                "rows": {"reference": N_REF, "current": N_CUR},
                "columns": len(NUMERIC + CATEGORICAL),
                "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                f"Python {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
