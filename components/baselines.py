from kfp.dsl import Dataset, Input, Metrics, Output

from components import component


@component
def baselines(
    spec_yaml: str,
    train: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    metrics: Output[Metrics],
) -> dict:
    """Test-window metrics of the dumb model and the gradient-boosting reference."""
    from pathlib import Path

    from driftloop.steps import run_baselines, spec_from_text

    out = run_baselines(
        Path(train.path), Path(validation.path), Path(test.path), spec_from_text(spec_yaml)
    )
    for model, values in out.items():
        for name, value in values.items():
            metrics.log_metric(f"{model}_{name}", value)
    return out
