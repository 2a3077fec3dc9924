from typing import NamedTuple

from kfp.dsl import Dataset, Input, Output

from components import component


@component
def split(
    spec_yaml: str,
    dataset: Input[Dataset],
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
) -> NamedTuple("Rows", train=int, validation=int, test=int):
    """Contiguous time slices: train < validation < test. Never shuffled across time."""
    from pathlib import Path

    from driftloop.steps import spec_from_text, split

    rows = split(
        Path(dataset.path),
        spec_from_text(spec_yaml),
        Path(train.path),
        Path(validation.path),
        Path(test.path),
    )
    for name, art in (("train", train), ("validation", validation), ("test", test)):
        art.metadata["rows"] = rows[name]
    return (rows["train"], rows["validation"], rows["test"])
