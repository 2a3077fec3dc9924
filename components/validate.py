from kfp.dsl import Dataset, Input, Markdown, Output

from components import component


@component
def validate(spec_yaml: str, dataset: Input[Dataset], report: Output[Markdown]):
    """Schema and quality checks; fails the run with a column-level message when bad."""
    from pathlib import Path

    from driftloop.steps import spec_from_text, validate_dataset

    validate_dataset(Path(dataset.path), spec_from_text(spec_yaml), Path(report.path))
