"""The image loop on scikit-learn's digits, with the real parts: accuracy, serving latency,
embedding drift speed, and a replay that corrupts the images over time.

    .venv/bin/python bench/image.py            # ~4 min on 2 cores; the last line is JSON

1. **Accuracy.** The pipeline's steps in-process (``run_inprocess``) train ``image-cnn`` on
   ``data/digits.yaml`` (2 trials from its search space) and register it; its test accuracy
   (the latest 15 % of the images, by time) is compared with scikit-learn's ``SVC()`` on
   the same train/test split, in the same run.
2. **Serving.** One kserve REST server in a subprocess hosts the registered model and a
   no-op ``kserve.Model``; sequential single-image V2 requests (FP32 ``[1, 1, 8, 8]``,
   JSON) against ``{"instances": [...]}`` to the no-op, interleaved in rounds.
3. **Embedding drift speed.** ``family.drift`` (Evidently's domain classifier on the
   embeddings + per-statistic drift) on a window of 10,000 logged images, warm.
4. **Replay.** The digits are shuffled once (seeded) into a Parquet of encoded images with
   a time column (the image kind's Parquet source): in scikit-learn's order the later
   images come from other writers, a real drift (their brightness alone drifts) that would
   make every "uncorrupted" window drift. A start model is trained (``run_inprocess``) on
   the first 1,500 and promoted (1,050 training images: a reference of more than 1,000
   rows, where Evidently judges columns by effect size, Wasserstein distance >= 0.1, not
   by a p-value); the other 297 are the served stream, 1,000 images per one-day window,
   logged with ``write_log_frame`` exactly as the collector writes what the family logs
   (``predict_logged``: the embedding and image statistics). After each window the real
   drift job (``run_window``, ``data/digits_policy.yaml``: all four signals) decides.
   - quiet: 50 uncorrupted windows (images drawn with replacement, seeded): triggers counted;
   - drifting: 3 clean windows, then a corruption ramps up over 3 windows (severity 1/3,
     2/3) and stays full: a camera going bad -- rotation up to 30 degrees, Gaussian blur
     (sigma 0.7 px), sensor noise (sigma 0.15) and +0.1 brightness, all scaled by the
     severity, seeded per image. A trigger runs ``InProcessBackend`` (the pipeline's steps)
     on the last 3 days of the labelled stream (a Parquet of encoded images: the image
     kind's Parquet source), gated against the champion and promoted on a pass.
   Detection delay: windows from the first corrupted one to the trigger; the goal is a
   trigger no later than the first fully corrupted window. The retraining data resamples
   the same 297 images, so its test split shares images with its training split (clean
   ones repeat; corrupted ones differ by their noise): the gate's scores in the replay are
   optimistic; the served accuracy per window is not (each window is served by the model
   in production before any run trained on it).
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

from driftloop.data import TIME, load_window, split_by_time  # noqa: E402
from driftloop.datakinds.image import IMAGE  # noqa: E402
from driftloop.formats import VersionFiles, parse_schema  # noqa: E402
from driftloop.images import decode_png, encode_png  # noqa: E402
from driftloop.monitor import run_window  # noqa: E402
from driftloop.payloads import write_log_frame  # noqa: E402
from driftloop.policy import load_policy  # noqa: E402
from driftloop.registry import Registry  # noqa: E402
from driftloop.spec import DatasetSpec, load_spec, parse_spec  # noqa: E402
from driftloop.steps import load_version, run_inprocess, sample_trials  # noqa: E402
from driftloop.store import LocalStore  # noqa: E402
from monitoring.backends import InProcessBackend  # noqa: E402

WINDOW_ROWS = 1_000  # single-column tests are noisy on small windows (driftloop/policy.py)
QUIET_WINDOWS = 50
RAMP = (0.0, 0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0, 1.0)  # severity per window
FIRST_CORRUPT, FIRST_FULL = 3, 5
START = datetime(2025, 1, 1)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- 1. accuracy ---------------------------------------------------------------------------
def accuracy(store: LocalStore) -> dict:
    from sklearn.svm import SVC

    from driftloop.datakinds.image import _pixels

    spec = load_spec(ROOT / "data" / "digits.yaml")
    t = time.perf_counter()
    ref, gate = run_inprocess(spec, store, "", "", sample_trials(2, family="image-cnn"))
    train_s = time.perf_counter() - t
    assert ref is not None, gate.summary
    metrics = json.loads(Registry(store).read_file(ref, VersionFiles.METRICS))
    s = split_by_time(load_window(spec, None, None), spec)
    svc = SVC().fit(_pixels(s.train[IMAGE]), s.train["digit"])
    svc_acc = float((svc.predict(_pixels(s.test[IMAGE])) == s.test["digit"]).mean())
    return {
        "accuracy": metrics["test"]["accuracy"],
        "svc_accuracy": svc_acc,
        "linear_baseline_accuracy": metrics["baselines"]["linear"]["accuracy"],
        "pipeline_s": round(train_s, 1),
        "gate": gate.summary,
    }


# -- 2. serving ----------------------------------------------------------------------------
def serve(port: int, store: str) -> None:
    """The server subprocess."""
    import logging

    import torch
    from kserve import Model

    from serving.artifacts import load_from_registry
    from serving.model import Predictor
    from serving.options import DEFAULT_TORCH_THREADS
    from serving.server import LocalServer

    class Noop(Model):
        def __init__(self) -> None:
            super().__init__("noop")
            self.ready = True

        def predict(self, payload: dict, headers: dict | None = None) -> dict:
            return {"predictions": [0.0]}

    torch.set_num_threads(DEFAULT_TORCH_THREADS)
    reg = Registry(LocalStore(Path(store)))
    ref = reg.resolve("digits")
    models = [Noop(), Predictor("digits", lambda: load_from_registry(reg, ref))]
    logging.getLogger().setLevel(logging.WARNING)
    LocalServer(models, port=port).run()


def latency(store: Path, image: np.ndarray, n: int = 2000, warmup: int = 200) -> dict:
    import httpx

    from driftloop.ports import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(store)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    v2 = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, *image.shape]}]}
    v2["inputs"][0]["data"] = image.ravel().tolist()
    targets = {
        "noop": ("/v1/models/noop:predict", json.dumps({"instances": [[0.0]]}).encode()),
        "v2": ("/v2/models/digits/infer", json.dumps(v2).encode()),
        "v1": ("/v1/models/digits:predict", json.dumps({"instances": [image.tolist()]}).encode()),
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
            for path, body in targets.values():
                for _ in range(warmup):
                    c.post(path, content=body, headers=headers).raise_for_status()
            times: dict[str, list[float]] = {k: [] for k in targets}
            for _ in range(10):  # rounds: a slow phase of the machine hits every target
                for k, (path, body) in targets.items():
                    for _ in range(n // 10):
                        t = time.perf_counter()
                        c.post(path, content=body, headers=headers).raise_for_status()
                        times[k].append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(10)
    return {f"{k}_p50_ms": round(1000 * float(np.median(v)), 3) for k, v in times.items()}


# -- 3 and 4. the stream, drift, the loop ----------------------------------------------------
def corrupt(png: bytes, severity: float, rng: np.random.Generator) -> bytes:
    """A camera going bad, scaled by ``severity`` in [0, 1]: rotation up to 30 degrees,
    Gaussian blur (sigma 0.7 px), noise (sigma 0.15) and +0.1 brightness."""
    from scipy import ndimage

    if severity <= 0:
        return png
    x = decode_png(png)[0].astype(np.float64) / 255
    angle = 30 * severity * rng.choice([-1.0, 1.0])
    x = ndimage.rotate(x, angle, reshape=False, order=1, mode="constant")
    x = ndimage.gaussian_filter(x, sigma=0.7 * severity)
    x = x + rng.normal(0, 0.15 * severity, x.shape) + 0.1 * severity
    return encode_png(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)[None])


def stream(pool: pd.DataFrame, severities: list[float], seed: int) -> pd.DataFrame:
    """WINDOW_ROWS images per one-day window, drawn with replacement, corrupted by the
    window's severity; event times spread over the day."""
    rng = np.random.default_rng(seed)
    parts = []
    for w, sev in enumerate(severities):
        idx = rng.integers(len(pool), size=WINDOW_ROWS)
        part = pool.iloc[idx][[IMAGE, "digit"]].reset_index(drop=True)
        part[IMAGE] = [corrupt(b, sev, rng) for b in part[IMAGE]]
        day = START + timedelta(days=w)
        part[TIME] = [
            day + timedelta(seconds=int(s)) for s in np.sort(rng.integers(86400, size=WINDOW_ROWS))
        ]
        part["severity"] = sev
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def serve_window(store: LocalStore, model: str, rows: pd.DataFrame) -> tuple[int, float]:
    """Serve ``rows`` with the production model, log what its family logs; (version, acc)."""
    registry = Registry(store)
    ref = registry.resolve(model)
    fitted = load_version(registry, ref)
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    pred, logged = fitted.predict_logged(rows)
    assert logged is not None
    frame = pd.DataFrame(logged)
    frame[TIME] = rows[TIME].to_numpy()
    frame["prediction"], frame["label"] = pred["probability"], pred["label"]
    write_log_frame(store, model, ref.version, "default", schema, frame)
    return ref.version, float((pred["label"] == rows["digit"].to_numpy()).mean())


START_ROWS = 1500  # the start model's images; the rest of the shuffled digits are served


def image_spec(name: str, source: Path) -> DatasetSpec:
    """A user's spec for a Parquet of encoded images with a time column."""
    raw = {
        "name": name,
        "kind": "image",
        "source": {"path": str(source)},
        "time": {"column": TIME},
        "target": "digit",
        "task": "multiclass",
        "metric": "accuracy",
        "image": {"channels": 1, "size": [8, 8]},
        # The replay draws its windows from 297 held-out images with replacement: repeats
        # are the replay's, not a broken export's.
        "quality": {"max_duplicate_share": 1.0},
    }
    return parse_spec(raw, base_dir=source.parent)


def shuffled_digits(digits: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The digits in a seeded random order, one per hour from 2024-01-01, as Parquet."""
    df = digits.iloc[np.random.default_rng(0).permutation(len(digits))].reset_index(drop=True)
    df[TIME] = pd.date_range("2024-01-01", periods=len(df), freq="h")
    df.to_parquet(path, index=False)
    return df


def start_model(store: LocalStore, spec: DatasetSpec, trials: list[dict]) -> None:
    end = (datetime(2024, 1, 1) + timedelta(hours=START_ROWS)).isoformat()
    ref, gate = run_inprocess(spec, store, "", end, trials)
    assert ref is not None, gate.summary


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
        return
    import torch

    torch.set_num_threads(1)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = LocalStore(root / "store")
        log("1. pipeline steps on data/digits.yaml (2 trials) + SVC on the same split")
        out |= accuracy(store)
        log(f"   accuracy {out['accuracy']:.4f}, SVC {out['svc_accuracy']:.4f}")

        log("2. serving latency (subprocess server)")
        spec = load_spec(ROOT / "data" / "digits.yaml")
        digits = load_window(spec, None, None)
        image = decode_png(digits[IMAGE][1500]).astype(np.float32) / 255
        out |= latency(root / "store", image)
        log(f"   {out}")

        log("4a. the start model on 1,500 shuffled digits; the other 297 are the stream")
        trials = sample_trials(1, family="image-cnn")
        shuffled = shuffled_digits(digits, root / "digits-shuffled.parquet")
        pool = shuffled.iloc[START_ROWS:].reset_index(drop=True)
        start_model(store, image_spec("digits-quiet", root / "digits-shuffled.parquet"), trials)
        policy = load_policy(ROOT / "data" / "digits_policy.yaml")
        quiet = stream(pool, [0.0] * QUIET_WINDOWS, seed=1)
        triggers, shares = 0, []
        for w in range(QUIET_WINDOWS):
            lo, hi = START + timedelta(days=w), START + timedelta(days=w + 1)
            serve_window(store, "digits-quiet", quiet[(quiet[TIME] >= lo) & (quiet[TIME] < hi)])
            rec = run_window(
                store, "digits-quiet", lo, hi, policy=policy, backend=None, report_rows=0
            )
            triggers += rec.trigger
            shares.append(rec.drift.columns["embedding"].score)
        out["quiet_triggers"] = triggers
        out["quiet_windows"] = QUIET_WINDOWS
        out["quiet_embedding_auc_max"] = round(max(shares), 4)
        log(f"   quiet: {triggers} triggers in {QUIET_WINDOWS} windows (max AUC {max(shares):.3f})")

        log("3. embedding drift on 10,000 logged images")
        registry = Registry(store)
        ref = registry.resolve("digits-quiet")
        family_model = load_version(registry, ref)
        schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
        stats = json.loads(registry.read_file(ref, VersionFiles.REFERENCE_STATS))
        big = quiet.head(10_000)
        pred, logged = family_model.predict_logged(big)
        window = pd.DataFrame(logged)
        window["prediction"] = pred["probability"]
        from driftloop.families import get_family

        family = get_family("image-cnn")
        family.drift(stats, window.head(500), schema)  # warm: Evidently's import
        t = time.perf_counter()
        result = family.drift(stats, window, schema)
        out["embedding_drift_s"] = round(time.perf_counter() - t, 3)
        out["embedding_drift_rows"] = len(window)
        log(f"   {out['embedding_drift_s']} s, AUC {result.columns['embedding'].score:.3f}")

        log("4b. the drifting stream: clean, ramp, corrupted; a trigger retrains")
        start_model(store, image_spec("digits-loop", root / "digits-shuffled.parquet"), trials)
        drifting = stream(pool, list(RAMP), seed=2)
        source = root / "stream.parquet"
        drifting.drop(columns="severity").to_parquet(source, index=False)
        backend = InProcessBackend(store, image_spec("digits-loop", source), trials)
        windows, trigger_at = [], None
        for w, sev in enumerate(RAMP):
            lo, hi = START + timedelta(days=w), START + timedelta(days=w + 1)
            version, acc = serve_window(
                store, "digits-loop", drifting[(drifting[TIME] >= lo) & (drifting[TIME] < hi)]
            )
            rec = run_window(
                store,
                "digits-loop",
                lo,
                hi,
                policy=policy,
                backend=backend,
                retrain_days=3,
                report_rows=0,
            )
            if rec.trigger and trigger_at is None:
                trigger_at = w
            windows.append(
                {
                    "window": w,
                    "severity": round(sev, 3),
                    "served_version": version,
                    "served_accuracy": round(acc, 4),
                    "drifted_share": rec.drifted_share,
                    "drifted": rec.drifted_columns,
                    "trigger": rec.trigger,
                }
            )
            log(f"   {windows[-1]}")
        after = Registry(store).alias("digits-loop", "production")
        out["detection_delay_windows"] = None if trigger_at is None else trigger_at - FIRST_CORRUPT
        out["triggered_by_first_full_window"] = trigger_at is not None and trigger_at <= FIRST_FULL
        out["retrain_outcomes"] = list(backend.outcomes.values())
        out["promoted_version"] = after
        out["windows"] = windows
    out["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
