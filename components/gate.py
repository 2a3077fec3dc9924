from kfp.dsl import Dataset, Input, Markdown, Model, Output

from components import component


@component
def gate(
    spec_yaml: str,
    store_uri: str,
    margin: float,
    baselines: dict,
    model: Input[Model],
    train: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    report: Output[Markdown],
    run_id: str = "",
    trigger_id: str = "",
) -> bool:
    """Challenger (the selected recipe refit on ``train`` + ``validation``: every row
    before the test window) vs the floor, the production champion and earlier versions on
    the same test window; the decision is kept in the store (``models/<m>/gates/``)
    whatever it is.
    Returns whether the challenger passed, a plain bool for ``dsl.If`` (kfp.local resolves
    single outputs only); the evidence goes to ``report`` (its metadata carries the
    verdict, the summary, the champion's metrics and the version to restore, if any)."""
    from pathlib import Path

    from driftloop.settings import load_settings
    from driftloop.steps import gate, spec_from_text
    from driftloop.store import open_store

    store = open_store(load_settings(store_uri=store_uri))
    decision, champion = gate(
        Path(model.path),
        Path(test.path),
        spec_from_text(spec_yaml),
        baselines,
        store,
        margin,
        run_id,
        trigger_id,
        (Path(train.path), Path(validation.path)),
    )
    print(decision.summary)
    Path(report.path).write_text("# Gate\n\n" + "\n".join(f"- {r}" for r in decision.reasons))
    report.metadata.update(
        {
            "passed": decision.passed,
            "verdict": decision.verdict,
            "restore": decision.restore or 0,
            "summary": decision.summary,
            "champion": champion or {},
        }
    )
    return decision.passed
