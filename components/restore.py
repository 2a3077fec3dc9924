from kfp.dsl import Input, Markdown

from components import component


@component
def restore(
    spec_yaml: str,
    store_uri: str,
    gate_report: Input[Markdown],
    promote: bool,
    deploy: bool,
    namespace: str,
    canary_percent: int,
    timeout_seconds: int,
) -> int:
    """When the gate refused the challenger because an earlier version beats both it and
    the champion on the same window, serve that version again: through the
    InferenceService like a new one (``deploy``), else by the production alias (when
    ``promote``). Returns the version restored, 0 when there is none to restore."""
    from driftloop.deploy import connect, kube_config
    from driftloop.deploy import deploy as roll_out
    from driftloop.gate import restore
    from driftloop.registry import Registry
    from driftloop.settings import load_settings
    from driftloop.steps import spec_from_text
    from driftloop.store import open_store

    version = int(gate_report.metadata.get("restore") or 0)
    if not version or not (promote or deploy):
        return 0
    store = open_store(load_settings(store_uri=store_uri))
    model = spec_from_text(spec_yaml).name
    if deploy:
        with connect(kube_config(in_cluster=True), model, "", namespace) as target:
            roll_out(Registry(store), target, version, canary_percent, timeout=timeout_seconds)
    else:
        restore(store, model, version, str(gate_report.metadata.get("summary", "")))
    return version
