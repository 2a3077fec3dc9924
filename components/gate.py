from kfp.dsl import Dataset, Input, Markdown, Model, Output

from components import component


@component
def gate(
    spec_yaml: str,
    store_uri: str,
    margin: float,
    baselines: dict,
    model: Input[Model],
    test: Input[Dataset],
    report: Output[Markdown],
) -> bool:
    """Challenger vs both baselines and the production champion on the same test window.
    Returns a plain bool for ``dsl.If`` (kfp.local resolves single outputs only); the
    evidence goes to ``report`` (its metadata carries the summary and champion metrics)."""
    from pathlib import Path

    from driftloop.settings import load_settings
    from driftloop.steps import gate, spec_from_text
    from driftloop.store import open_store

    store = open_store(load_settings(store_uri=store_uri))
    decision, champion = gate(
        Path(model.path), Path(test.path), spec_from_text(spec_yaml), baselines, store, margin
    )
    print(decision.summary)
    Path(report.path).write_text("# Gate\n\n" + "\n".join(f"- {r}" for r in decision.reasons))
    report.metadata.update(
        {"passed": decision.passed, "summary": decision.summary, "champion": champion or {}}
    )
    return decision.passed
