"""``make demo``: train, gate and register a bike-sharing model on 2011 data, locally.

Runs the real training pipeline with kfp.local into a fresh demo store
(``.driftloop/demo``, reset on each run so the demo is repeatable), then prints the
registered model's test metrics beside the baselines. Afterwards, for example:

    .venv/bin/driftloop --store .driftloop/demo models show bike-sharing
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from driftloop.errors import DriftloopError
from driftloop.registry import Registry, VersionRef
from driftloop.settings import load_settings
from driftloop.spec import load_spec
from driftloop.store import open_store

ROOT = Path(__file__).resolve().parents[1]
DEMO_STORE = ROOT / ".driftloop" / "demo"


def main() -> int:
    from pipelines.run import RunRequest, run_local

    shutil.rmtree(DEMO_STORE, ignore_errors=True)
    store = open_store(load_settings(store_uri=str(DEMO_STORE)))
    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    print("driftloop demo: training pipeline on bike sharing 2011 (kfp.local, 4 trials)...")
    t0 = time.perf_counter()
    run = run_local(RunRequest(spec=spec, store_uri=store.uri, end="2012-01-01"), store,
                    quiet=True)
    seconds = time.perf_counter() - t0
    if run.version is None:
        print("the challenger did not pass the gate:\n" + run.gate)
        return 1
    import json

    ref = VersionRef(spec.name, run.version)
    metrics = json.loads(Registry(store).read_file(ref, "metrics.json"))
    print(f"\nregistered {spec.name} v{run.version} -> production in {seconds:.0f} s")
    print(f"store: {store.uri}\n")
    rows = [("torch (driftloop)", metrics["test"])]
    rows += [(f"baseline: {n}", m) for n, m in sorted(metrics["baselines"].items())]
    print(f"{'model':22s} {'RMSE':>8s} {'MAE':>8s} {'R2':>7s}   (test window)")
    for name, m in rows:
        print(f"{name:22s} {m['rmse']:8.2f} {m['mae']:8.2f} {m['r2']:7.3f}")
    print(f"\ngate: {metrics['gate']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DriftloopError as e:
        print(f"driftloop demo: error: {e}", file=sys.stderr)
        sys.exit(1)
