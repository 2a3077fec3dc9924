"""Wall time of the local training pipeline (kfp.local) on bike sharing, 4 trials, per step.

Goal: <= 60 s on 2 cores (each local step costs about 1 s of process start-up).

    .venv/bin/python bench/pipeline.py     # last line: one JSON object
"""

import json
import os
import platform
import re
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from driftloop.settings import load_settings
from driftloop.spec import load_spec
from driftloop.store import open_store
from pipelines.run import RunRequest, run_local, strip_ansi

DATA = Path(__file__).resolve().parents[1] / "data"
LINE = re.compile(r"(\d\d:\d\d:\d\d\.\d+) - \w+ - (Executing task|Task) '(\S+)'( finished)?")


def step_seconds(log: str) -> dict[str, float]:
    """Sum of each step's durations (trials run two at a time, so 'train' can exceed
    its share of the wall time)."""
    plain = strip_ansi(log)
    started: dict[str, list[datetime]] = defaultdict(list)
    total: dict[str, float] = defaultdict(float)
    for ts, what, task, finished in LINE.findall(plain):
        t = datetime.strptime(ts, "%H:%M:%S.%f")
        if what == "Executing task":
            started[task].append(t)
        elif finished and started[task]:
            total[task] += (t - started[task].pop(0)).total_seconds()
    return {k: round(v, 2) for k, v in total.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(load_settings(store_uri=str(Path(tmp) / "store")))
        spec = load_spec(DATA / "bike_sharing.yaml")
        req = RunRequest(spec=spec, store_uri=store.uri, end="2012-01-01", n_trials=4)
        t0 = time.perf_counter()
        run = run_local(req, store, Path(tmp) / "kfp", quiet=True)
        wall = time.perf_counter() - t0
    out = {
        "wall_s": round(wall, 1),
        "steps": step_seconds(run.log),
        "registered": run.version is not None,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
