from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import component


@component
def evaluate(
    spec_yaml: str,
    trials: Input[list[Model]],
    train: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    best: Output[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
) -> dict:
    """Pick the best trial (by validation within each family; the families' finalists by
    the test window, each refit on every row before it), then score it on the test
    window."""
    import shutil
    from pathlib import Path

    from driftloop.steps import evaluate_on_test, select_best, spec_from_text

    spec = spec_from_text(spec_yaml)
    before_test = (Path(train.path), Path(validation.path))
    chosen = select_best([Path(t.path) for t in trials], spec, Path(test.path), before_test)
    shutil.copytree(chosen, best.path, dirs_exist_ok=True)
    result = evaluate_on_test(Path(best.path), Path(test.path), spec)
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    best.metadata.update({f"test_{k}": v for k, v in result["metrics"].items()})
    if "confusion" in result:
        classification.log_confusion_matrix(result["classes"], result["confusion"])
    if "roc" in result:
        roc = result["roc"]
        classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["threshold"])
    return result["metrics"]
