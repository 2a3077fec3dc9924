from typing import NamedTuple

from kfp.dsl import Dataset, Output

from components import component


@component
def ingest(spec_yaml: str, start: str, end: str, dataset: Output[Dataset]) -> NamedTuple(
    "Ingested", rows=int, sha256=str
):
    """The window [start, end) of the dataset's source, typed by its spec, as Parquet."""
    from pathlib import Path

    from driftloop.steps import ingest, spec_from_text

    info = ingest(spec_from_text(spec_yaml), start, end, Path(dataset.path))
    dataset.metadata.update(info)
    return (int(info["rows"]), str(info["sha256"]))
