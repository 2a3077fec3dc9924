"""The closed loop against what a user would do instead, on the bundled datasets: a thin
caller of ``driftloop backtest`` (``replay/backtest.py``), one dataset after another.

    .venv/bin/python bench/loop.py                       # both datasets; last line is JSON
    .venv/bin/python bench/loop.py --datasets bike_sharing --workers 2

Bike sharing: the first model is trained on 2011, 2012 is replayed. Bank marketing: trained
on its first year (synthetic time, one row per 30 minutes), the rest up to 2010-09 is
replayed. Strategies side by side: never retraining, a monthly calendar with the torch
family and with LightGBM (trailing six months, always promoted), and driftloop. Per
dataset the JSON holds ``metric``, the average monthly figure of each strategy (bank: F1
and ROC-AUC), ``ratio_vs_lgbm`` (driftloop / calendar LightGBM), ``retrains``,
``calendar_retrains``, ``promotions`` and ``estimate_within_share``; the dashboards go to
``bench-output/loop-<dataset>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.backtest import (  # noqa: E402
    BacktestConfig,
    run_backtest,
    summarise,
    write_outputs,
)

CASES = {
    "bike_sharing": {
        "spec_path": str(ROOT / "data" / "bike_sharing.yaml"),
        "train_start": "2011-01-01",
        "train_end": "2012-01-01",
        "end": "2013-01-01",
    },
    "bank_marketing": {
        "spec_path": str(ROOT / "data" / "bank_marketing.yaml"),
        "train_start": "2008-05-01",
        "train_end": "2009-05-01",
        # Synthetic time ends 2010-09-04; the partial September (~170 rows) is not served.
        "end": "2010-09-01",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-rows", type=int, default=0, help="Evidently HTML rows (0: none)")
    args = ap.parse_args()
    out: dict = {}
    t0 = time.perf_counter()
    for key in args.datasets:
        config = BacktestConfig(**CASES[key], report_rows=args.report_rows)
        t = time.perf_counter()
        result = run_backtest(config, args.workers)
        write_outputs(config, result, ROOT / "bench-output" / f"loop-{key}")
        out[key] = {**summarise(config, result), "seconds": round(time.perf_counter() - t, 1)}
        print(f"{key}: {out[key]}", flush=True)
    out["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
