"""The training pipeline's steps as plain functions over files.

Each KFP component in ``components/`` is a typed signature that calls one function here,
so every step can be run and tested without KFP. Data travels as Parquet files, models
as directories (``TabularModel.save``), the dataset spec as YAML text.

    ingest -> validate -> split -> baselines
                               \\-> train_trial x N -> select_best -> gate -> register
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from driftloop import __version__
from driftloop.data import TIME, frame_hash, load_window, split_by_time
from driftloop.gate import GateDecision, decide
from driftloop.metrics import confusion, roc_points
from driftloop.model import MODEL_FILES, TabularModel
from driftloop.registry import Registry, VersionRef
from driftloop.spec import DatasetSpec, parse_spec
from driftloop.store import Store
from driftloop.train import baselines, evaluate, scores, train_model
from driftloop.validation import validate

REFERENCE_ROWS = 20_000  # drift reference sample; enough for stable per-column statistics


def spec_from_text(text: str) -> DatasetSpec:
    return parse_spec(yaml.safe_load(text), base_dir=Path.cwd(), origin="spec parameter")


def spec_to_text(spec: DatasetSpec) -> str:
    """YAML for a pipeline parameter, with the source path made absolute."""
    d = spec.model_dump(mode="json", exclude={"base_dir"})
    d["source"]["path"] = spec.source_uri
    if spec.rules_path is not None:
        d["rules"] = str(spec.rules_path)
    return yaml.safe_dump(d, sort_keys=False)


def read(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


# 1. Ingest: the window [start, end) of the source, typed, as Parquet.
def ingest(spec: DatasetSpec, start: str, end: str, out: Path) -> dict:
    df = load_window(spec, start or None, end or None)
    df.to_parquet(out, index=False)
    return {
        "rows": len(df),
        "sha256": frame_hash(df),
        "start": start,
        "end": end,
        "first": str(df[TIME].min()),
        "last": str(df[TIME].max()),
    }


# 2. Validate: the report is always written; a failing batch then raises ValidationFailed.
def validate_dataset(dataset: Path, spec: DatasetSpec, report_out: Path) -> None:
    report = validate(read(dataset), spec)
    report_out.write_text(report.to_markdown())
    if report.failures:
        sys.stderr.write(report.to_markdown())  # the KFP log shows the whole table
    report.raise_if_failed()


# 3. Split by time.
def split(dataset: Path, spec: DatasetSpec, train: Path, validation: Path, test: Path) -> dict:
    s = split_by_time(read(dataset), spec)
    for df, p in ((s.train, train), (s.validation, validation), (s.test, test)):
        df.to_parquet(p, index=False)
    return {"train": len(s.train), "validation": len(s.validation), "test": len(s.test)}


def _splits(train: Path, validation: Path, test: Path | None = None):  # noqa: ANN202
    from driftloop.data import Splits

    empty = pd.DataFrame()
    return Splits(read(train), read(validation), read(test) if test else empty)


# 4. Baselines on the test window.
def run_baselines(train: Path, validation: Path, test: Path, spec: DatasetSpec) -> dict:
    return baselines(_splits(train, validation, test), spec)


# 5. One hyperparameter trial.
def train_trial(
    train: Path, validation: Path, spec: DatasetSpec, params: dict, model_out: Path
) -> dict:
    import torch

    # Trials run side by side (ParallelFor parallelism=2 on 2-core nodes): one thread
    # each, or they oversubscribe the cores and take 3x longer.
    torch.set_num_threads(1)
    result = train_model(_splits(train, validation), spec, params)
    result.model.save(model_out)
    info = {"params": result.params, "epochs": result.epochs, "validation": result.val_metrics}
    (model_out / "trial.json").write_text(json.dumps(info, indent=2))
    return info


# 6. The best trial by validation score.
def select_best(model_dirs: list[Path], spec: DatasetSpec) -> Path:
    from driftloop.metrics import better

    best, best_score = None, None
    for d in model_dirs:
        score = json.loads((d / "trial.json").read_text())["validation"][spec.metric]
        if best_score is None or better(spec.metric, score, best_score):
            best, best_score = d, score
    assert best is not None, "no trials"
    return best


# 7. Evaluate on the test window (+ confusion matrix and ROC curve for classification).
def evaluate_on_test(model_dir: Path, test: Path, spec: DatasetSpec) -> dict:
    model, df = TabularModel.load(model_dir), read(test)
    pred = model.predict(df)
    out: dict = {"metrics": scores(pred, df, spec)}
    if spec.task != "regression":
        y = df[spec.target].astype(str).to_numpy()
        out["classes"] = model.pre.classes
        out["confusion"] = confusion(y, pred["label"], model.pre.classes)
        if spec.task == "binary":
            out["roc"] = roc_points((y == spec.positive_label).astype(int), pred["probability"])
            out["threshold"] = model.pre.threshold
    return out


# 8. Gate: challenger vs baselines and the champion, on the same test window.
def gate(
    model_dir: Path,
    test: Path,
    spec: DatasetSpec,
    baseline_metrics: dict,
    store: Store,
    margin: float,
) -> tuple[GateDecision, dict | None]:
    df = read(test)
    challenger = evaluate(TabularModel.load(model_dir), df, spec)
    champion = champion_metrics(store, spec, df)
    return decide(spec.metric, challenger, baseline_metrics, champion, margin), champion


def champion_metrics(store: Store, spec: DatasetSpec, df: pd.DataFrame) -> dict | None:
    registry = Registry(store)
    version = registry.alias(spec.name, "production")
    if version is None:
        return None
    ref = VersionRef(spec.name, version)
    manifest = registry.manifest(ref)
    with tempfile.TemporaryDirectory() as tmp:  # only the model's files, verified
        for name in MODEL_FILES:
            (Path(tmp) / name).write_bytes(registry.read_file(ref, name, manifest))
        champion = TabularModel.load(Path(tmp))
    return {**evaluate(champion, df, spec), "version": version}


# 9. Register (and optionally promote) a gated model.
def register(
    model_dir: Path,
    train: Path,
    test: Path,
    spec: DatasetSpec,
    store: Store,
    lineage: dict,
    promote: bool,
) -> VersionRef:
    model, train_df = TabularModel.load(model_dir), read(train)
    test_metrics = evaluate_on_test(model_dir, test, spec)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model.save(out)
        schema = input_schema(model, spec)
        (out / "schema.json").write_text(json.dumps(schema, indent=2))
        (out / "metrics.json").write_text(
            json.dumps({"test": test_metrics["metrics"], **lineage.get("evaluation", {})}, indent=2)
        )
        if spec.rules_path is not None:
            (out / "rules.yaml").write_bytes(spec.rules_path.read_bytes())
        # The spec it was trained from: the drift job retrains from it, no flags needed.
        (out / "dataset.yaml").write_text(spec_to_text(spec))
        (out / "reference").mkdir()
        # The drift reference: a sample with predictions, and its statistics precomputed
        # now so that each drift window costs about one pass of numpy over the window.
        from driftloop.drift import reference_statistics, save_statistics

        sample = reference_sample(model, train_df, spec)
        sample.to_parquet(out / "reference" / "sample.parquet")
        save_statistics(
            reference_statistics(sample, schema),
            out / "reference" / "stats.json",
        )
        record = model_dir / "trial.json"  # written by train_trial; absent for a bare model
        trial = json.loads(record.read_text()) if record.exists() else {}
        full = {
            **lineage,
            "params": trial.get("params", {}),
            "epochs": trial.get("epochs"),
            "code_version": __version__,
            "dataset": spec.name,
            "train_rows": len(train_df),
        }
        (out / "card.md").write_text(model_card(spec, test_metrics["metrics"], full))
        ref = Registry(store).register(spec.name, out, full)
    if promote:
        Registry(store).promote(spec.name, ref.version, reason="passed the gate")
    return ref


def input_schema(model: TabularModel, spec: DatasetSpec) -> dict:
    """The input contract the predictor enforces (and V2 metadata advertises)."""
    feats: list[dict[str, Any]] = [
        {"name": c, "kind": "numeric", "datatype": "FP64"} for c in model.pre.numeric
    ]
    feats += [
        {"name": c, "kind": "categorical", "datatype": "BYTES", "categories": cats}
        for c, cats in model.pre.categories.items()
    ]
    return {
        "model": spec.name,
        "task": spec.task,
        "target": spec.target,
        "features": feats,
        "unknown_category": spec.unknown_category,
        "classes": model.pre.classes,
        "positive_label": spec.positive_label,
        "threshold": model.pre.threshold,
    }


def reference_sample(model: TabularModel, train: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Training rows (features, target, time) with the model's predictions, for drift."""
    sample = train.sample(n=min(REFERENCE_ROWS, len(train)), random_state=0).sort_values(TIME)
    pred = model.predict(sample)
    sample = sample.copy()
    sample["prediction"] = pred["value"] if spec.task == "regression" else pred["probability"]
    return sample.reset_index(drop=True)


def model_card(spec: DatasetSpec, metrics: dict, lineage: dict) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    base = lineage.get("evaluation", {}).get("baselines", {})
    brow = "\n".join(f"| {n} | {m.get(spec.metric, float('nan')):.4f} |" for n, m in base.items())
    return f"""# Model card: {spec.name}

- Task: {spec.task}, target `{spec.target}`, optimised for `{spec.metric}`.
- Training window: [{lineage.get("window", {}).get("start")}, \
{lineage.get("window", {}).get("end")}), {lineage.get("train_rows")} training rows.
- Features: {", ".join(spec.features)}. Dropped: {", ".join(spec.drop) or "none"}.
- Pipeline run: {lineage.get("run_id") or "n/a"}; trigger: {lineage.get("trigger_id") or "none"}.
- driftloop {lineage.get("code_version")}.

## Test-window metrics

| metric | value |
|---|---|
{rows}

## Baselines ({spec.metric}, same test window)

| model | {spec.metric} |
|---|---|
{brow}

## Intended use and limits

Predictions are only as good as the match between live traffic and the training window;
driftloop's drift jobs compare the two and trigger retraining when they part.
"""


def run_inprocess(
    spec: DatasetSpec,
    store: Store,
    start: str,
    end: str,
    trials: list[dict],
    margin: float = 0.0,
    promote: bool = True,
    trigger_id: str = "",
    obey_gate: bool = True,
) -> tuple[VersionRef | None, GateDecision]:
    """The training pipeline's steps, in the same order, in this process: no KFP, no
    subprocesses. For benchmarks and tests that retrain many times; the pipeline itself
    (``pipelines/training.py``) is the product path. ``obey_gate=False`` registers the
    challenger whatever the gate says (a calendar-retraining baseline to compare with)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        info = ingest(spec, start, end, d / "data.parquet")
        validate_dataset(d / "data.parquet", spec, d / "report.md")
        split(d / "data.parquet", spec, d / "train.parquet", d / "val.parquet", d / "test.parquet")
        base = run_baselines(d / "train.parquet", d / "val.parquet", d / "test.parquet", spec)
        models = []
        for i, params in enumerate(trials):
            train_trial(d / "train.parquet", d / "val.parquet", spec, params, d / f"trial{i}")
            models.append(d / f"trial{i}")
        best = select_best(models, spec)
        decision, champion = gate(best, d / "test.parquet", spec, base, store, margin)
        if obey_gate and not decision.passed:
            return None, decision
        lineage = {
            "window": {"start": start, "end": end},
            "dataset_sha256": info["sha256"],
            "run_id": "in-process",
            "trigger_id": trigger_id,
            "evaluation": {"baselines": base, "champion": champion, "gate": decision.summary},
        }
        return register(
            best, d / "train.parquet", d / "test.parquet", spec, store, lineage, promote
        ), decision
