from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def train(
    spec_yaml: str,
    trial: dict,
    train: Input[Dataset],
    validation: Input[Dataset],
    model: Output[Model],
    store_uri: str = "",
) -> float:
    """One trial ``{"family", "params"[, "warm_start": "production"]}``: a model of that
    family, selected on validation (a warm start fine-tunes the production version, read
    from the store). Returns its validation score in the spec's metric; a trial that
    failed returns NaN and its error is in the model's metadata (the others compete)."""
    from pathlib import Path

    from driftloop.settings import load_settings
    from driftloop.steps import WARM_START, spec_from_text, train_trial
    from driftloop.store import open_store

    spec = spec_from_text(spec_yaml)
    store = open_store(load_settings(store_uri=store_uri)) if trial.get(WARM_START) else None
    info = train_trial(
        Path(train.path), Path(validation.path), spec, trial, Path(model.path), store
    )
    model.metadata.update(
        {
            "family": info.family,
            "params": info.params,
            "epochs": info.epochs,
            "warm_start": info.warm_start or 0,
            "error": info.error,
            **{f"validation_{k}": v for k, v in info.validation.items()},
        }
    )
    return float(info.validation.get(spec.metric, float("nan")))
