from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def train(
    spec_yaml: str,
    trial: dict,
    train: Input[Dataset],
    validation: Input[Dataset],
    model: Output[Model],
) -> float:
    """One trial ``{"family", "params"}``: a model of that family, selected on validation.
    Returns its validation score in the spec's metric."""
    from pathlib import Path

    from driftloop.steps import spec_from_text, train_trial

    spec = spec_from_text(spec_yaml)
    info = train_trial(Path(train.path), Path(validation.path), spec, trial, Path(model.path))
    model.metadata.update(
        {
            "family": info.family,
            "params": info.params,
            "epochs": info.epochs,
            **{f"validation_{k}": v for k, v in info.validation.items()},
        }
    )
    return float(info.validation[spec.metric])
