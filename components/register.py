from kfp.dsl import Dataset, Input, Markdown, Model, Output

from components import component


@component
def register(
    spec_yaml: str,
    store_uri: str,
    start: str,
    end: str,
    run_id: str,
    trigger_id: str,
    dataset_sha256: str,
    promote: bool,
    baselines: dict,
    test_metrics: dict,
    gate_report: Input[Markdown],
    selected: Input[Model],
    model: Input[Model],
    dataset: Input[Dataset],
    test: Input[Dataset],
    card: Output[Markdown],
) -> int:
    """A new immutable registry version of the refit ``model`` (trained on ``dataset``, the
    whole window), COMMITTED last, with the gated (``selected``) model's ``test_metrics``,
    importances and label-free estimator; promoted when ``promote``."""
    from pathlib import Path

    from driftloop.formats import Evaluation, Lineage, TimeWindow, VersionFiles
    from driftloop.registry import Registry
    from driftloop.settings import load_settings
    from driftloop.steps import register, spec_from_text
    from driftloop.store import open_store

    store = open_store(load_settings(store_uri=store_uri))
    spec = spec_from_text(spec_yaml)
    lineage = Lineage(
        window=TimeWindow(start=start, end=end),
        dataset_sha256=dataset_sha256,
        run_id=run_id,
        trigger_id=trigger_id,
        evaluation=Evaluation(
            baselines=baselines,
            champion=gate_report.metadata.get("champion") or None,
            gate=gate_report.metadata.get("summary", ""),
        ),
    )
    ref = register(
        Path(model.path),
        Path(dataset.path),
        Path(test.path),
        spec,
        store,
        lineage,
        promote,
        test_metrics,
        Path(selected.path),
    )
    Path(card.path).write_bytes(Registry(store).read_file(ref, VersionFiles.CARD))
    return ref.version
