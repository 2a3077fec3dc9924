"""Model quality: driftloop's torch model vs a HistGradientBoosting reference.

Same window (each dataset whole), same time-ordered split, same features; the torch side
runs the pipeline's 4-trial search and picks the best trial by validation, as the
pipeline does. Goals: bike sharing RMSE <= 1.05 x reference; bank ROC-AUC >= reference - 0.01.

    .venv/bin/python bench/quality.py      # last line: one JSON object
"""

import json
import os
import platform
import time
from pathlib import Path

import torch

from driftloop.baselines import baselines
from driftloop.data import load_window, split_by_time
from driftloop.families import get_family
from driftloop.metrics import better, scores
from driftloop.spec import load_spec

DATA = Path(__file__).resolve().parents[1] / "data"


def best_torch(spec, splits):
    family = get_family("tabular-torch")
    best = None
    for params in family.sample_trials(4):
        r = family.train(splits, spec, params)
        score = r.validation[spec.metric]
        if best is None or better(spec.metric, score, best[0]):
            best = (score, r.model)
    return scores(best[1].predict(splits.test), splits.test, spec)


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    out = {}
    for key, file, metric in (
        ("bike_sharing", "bike_sharing.yaml", "rmse"),
        ("bank_marketing", "bank_marketing.yaml", "roc_auc"),
    ):
        spec = load_spec(DATA / file)
        splits = split_by_time(load_window(spec, None, None), spec)
        t0 = time.perf_counter()
        torch_metrics = best_torch(spec, splits)
        t_torch = time.perf_counter() - t0
        reference = baselines(splits, spec)["gbm"]
        row = {
            "metric": metric,
            "torch": round(torch_metrics[metric], 4),
            "reference": round(reference[metric], 4),
            "torch_search_s": round(t_torch, 1),
            "test_rows": len(splits.test),
        }
        if metric == "rmse":
            row["ratio"] = round(torch_metrics[metric] / reference[metric], 3)
        else:
            row["delta"] = round(torch_metrics[metric] - reference[metric], 4)
        print(f"{key}: {row}", flush=True)
        out[key] = row
    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
