"""Write ``tests/driftloop/fixtures/nannyml_reference.json``: NannyML's own CBPE and DLE
estimates on a small synthetic example, which ``tests/driftloop/test_estimate_nannyml.py``
feeds to ``driftloop.estimate`` and compares.

NannyML is NOT a project dependency (0.13.1 pins lightgbm<4.6, plotly<6, ... and cannot go
in the lock). Run this in a scratch venv outside the repository::

    python3.11 -m venv /tmp/nml
    /tmp/nml/bin/pip install nannyml==0.13.1 statsmodels "pandas<3"
    NML_DISABLE_USAGE_LOGGING=1 /tmp/nml/bin/python tools/nannyml_reference.py

(nannyml 0.13.1 imports statsmodels without declaring it; pandas is held below 3, as in
the project's lock. The fixture was written with numpy 2.4.6, pandas 2.3.3, scikit-learn
1.9.1, lightgbm 4.5.0, and this script rewrites it byte for byte.)

The example is seeded and synthetic; every input is rounded *before* NannyML sees it and
stored in the fixture as it was given, so the test needs neither this script nor the
generator's random stream. Chunking is fixed: analysis frames of ``CHUNKS * CHUNK`` rows,
``chunk_size=CHUNK``; the chunk boundaries NannyML used are stored too.

- ``cbpe_miscalibrated``: an over-confident binary model (score = sigmoid(2 z + 0.3) while
  P(y=1) = sigmoid(z)): NannyML's calibration check says calibrate, so both sides fit
  isotonic regression on the reference.
- ``cbpe_calibrated``: the model's score *is* P(y=1): NannyML's check says calibration
  does not help and it uses the scores as they are.
- ``dle``: a regression model (a linear fit) whose error grows with one feature and with
  a category; analysis chunks move towards the noisy region. NannyML's DLE with its
  default LGBMRegressor, metrics rmse and mae.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import lightgbm
import nannyml as nml
import numpy as np
import pandas as pd
import sklearn

OUT = Path(__file__).resolve().parents[1] / "tests/driftloop/fixtures/nannyml_reference.json"
SEED = 20240601
REFERENCE = 1200  # rows
CHUNK, CHUNKS = 400, 4  # analysis chunks
# Per analysis chunk: the shift of the latent score (CBPE) / of the noisy feature (DLE).
SHIFTS = [0.0, 0.5, 1.0, 1.5]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def classification(rng: np.random.Generator, calibrated: bool) -> dict[str, pd.DataFrame]:
    def frame(z: np.ndarray) -> pd.DataFrame:
        y = (rng.uniform(size=len(z)) < sigmoid(z)).astype(int)
        score = sigmoid(z) if calibrated else sigmoid(2.0 * z + 0.3)
        proba = np.round(np.clip(score, 1e-6, 1 - 1e-6), 6)
        return pd.DataFrame(
            {"y_pred_proba": proba, "y_pred": (proba >= 0.5).astype(int), "y_true": y}
        )

    reference = frame(rng.normal(0.0, 1.5, REFERENCE))
    analysis = pd.concat(
        [frame(rng.normal(s, 1.5 - 0.2 * i, CHUNK)) for i, s in enumerate(SHIFTS)],
        ignore_index=True,
    )
    return {"reference": reference, "analysis": analysis}


def regression(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    def frame(n: int, shift: float) -> pd.DataFrame:
        x1 = rng.normal(0.0, 1.0, n)
        x2 = rng.uniform(0.0, 4.0, n) + shift
        colour = rng.choice(["blue", "green", "red"], size=n, p=[0.5, 0.3, 0.2])
        noise = 0.3 + 0.4 * x2 + np.where(colour == "red", 1.0, 0.0)
        y = 2.0 * x1 + np.sin(x2) * 3.0 + rng.normal(0.0, 1.0, n) * noise
        return pd.DataFrame(
            {"x1": np.round(x1, 4), "x2": np.round(x2, 4), "colour": colour, "y": np.round(y, 4)}
        )

    reference = frame(REFERENCE, 0.0)
    analysis = pd.concat([frame(CHUNK, s) for s in SHIFTS], ignore_index=True)
    # The monitored model: least squares on x1, x2 (misses the sine and the colour).
    a = np.column_stack([np.ones(len(reference)), reference["x1"], reference["x2"]])
    coef = np.linalg.lstsq(a, reference["y"].to_numpy(), rcond=None)[0]
    for df in (reference, analysis):
        df["y_pred"] = np.round(coef[0] + coef[1] * df["x1"] + coef[2] * df["x2"], 4)
    return {"reference": reference, "analysis": analysis}


def chunks(result: Any) -> list[dict[str, Any]]:
    df = result.filter(period="analysis").to_df()
    metrics = [m for m in dict.fromkeys(df.columns.get_level_values(0)) if m != "chunk"]
    return [
        {
            "start": int(df[("chunk", "start_index")].iloc[i]),
            "end": int(df[("chunk", "end_index")].iloc[i]) + 1,  # NannyML's end is inclusive
            "estimated": {m: float(df[(m, "value")].iloc[i]) for m in metrics},
            "realized": {m: float(df[(m, "realized")].iloc[i]) for m in metrics},
        }
        for i in range(len(df))
    ]


def run_cbpe(data: dict[str, pd.DataFrame]) -> dict[str, Any]:
    cbpe = nml.CBPE(
        y_pred_proba="y_pred_proba",
        y_pred="y_pred",
        y_true="y_true",
        metrics=["roc_auc", "f1", "accuracy", "precision", "recall"],
        chunk_size=CHUNK,
        problem_type="classification_binary",
    )
    cbpe.fit(data["reference"])
    # The labels go along only for NannyML's realised metrics (context, not compared):
    # CBPE's estimate reads the probabilities and predicted labels alone.
    result = cbpe.estimate(data["analysis"])
    return {
        "calibrated_by_nannyml": bool(cbpe.needs_calibration),
        "reference": columns(data["reference"]),
        "analysis": columns(data["analysis"]),
        "chunks": chunks(result),
    }


def run_dle(data: dict[str, pd.DataFrame]) -> dict[str, Any]:
    ref, ana = data["reference"].copy(), data["analysis"].copy()
    for df in (ref, ana):
        df["colour"] = df["colour"].astype("category")  # NannyML: a categorical feature
    dle = nml.DLE(
        feature_column_names=["x1", "x2", "colour"],
        y_pred="y_pred",
        y_true="y",
        metrics=["rmse", "mae"],
        chunk_size=CHUNK,
    )
    dle.fit(ref)
    result = dle.estimate(ana)
    return {
        "numeric": ["x1", "x2"],
        "categorical": ["colour"],
        "reference": columns(data["reference"]),
        "analysis": columns(data["analysis"]),
        "chunks": chunks(result),
    }


def columns(df: pd.DataFrame) -> dict[str, list]:
    return {c: df[c].tolist() for c in df.columns}


def main() -> None:
    rng = np.random.default_rng(SEED)
    doc = {
        "generator": "tools/nannyml_reference.py",
        "seed": SEED,
        "versions": {
            "nannyml": nml.__version__,
            "lightgbm": lightgbm.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "chunk_size": CHUNK,
        "cbpe_miscalibrated": run_cbpe(classification(rng, calibrated=False)),
        "cbpe_calibrated": run_cbpe(classification(rng, calibrated=True)),
        "dle": run_dle(regression(rng)),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.write(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)\n")
    for case in ("cbpe_miscalibrated", "cbpe_calibrated", "dle"):
        for c in doc[case]["chunks"]:
            estimated = {k: round(v, 4) for k, v in c["estimated"].items()}
            sys.stdout.write(f"{case} [{c['start']}, {c['end']}) {estimated}\n")


if __name__ == "__main__":
    main()
