from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def refit(spec_yaml: str, model: Input[Model], dataset: Input[Dataset], refitted: Output[Model]):
    """The gated recipe trained again on the whole window (train, validation and test):
    the model the version serves. Its test-window metrics are the gated model's."""
    from pathlib import Path

    from driftloop.steps import refit, spec_from_text

    record = refit(
        Path(model.path), Path(dataset.path), spec_from_text(spec_yaml), Path(refitted.path)
    )
    refitted.metadata.update({"family": record.family, "rows": record.refit_rows})
