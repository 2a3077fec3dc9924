from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def train(
    spec_yaml: str,
    params: dict,
    train: Input[Dataset],
    validation: Input[Dataset],
    model: Output[Model],
) -> float:
    """One hyperparameter trial: a seeded torch model with early stopping on validation.
    Returns its validation score in the spec's metric."""
    from pathlib import Path

    from driftloop.steps import spec_from_text, train_trial

    spec = spec_from_text(spec_yaml)
    info = train_trial(Path(train.path), Path(validation.path), spec, params, Path(model.path))
    model.metadata.update(
        {
            "params": info["params"],
            "epochs": info["epochs"],
            **{f"validation_{k}": v for k, v in info["validation"].items()},
        }
    )
    return float(info["validation"][spec.metric])
