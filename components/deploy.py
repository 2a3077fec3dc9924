from components import component


@component
def deploy(
    spec_yaml: str,
    store_uri: str,
    version: int,
    isvc: str,
    namespace: str,
    canary_percent: int,
    timeout_seconds: int,
) -> str:
    """Serve the registered ``version`` on the InferenceService (canary, then 100 %), then
    move the production alias; on failure patch it back and fail the step. Runs with the
    pod's service account (driftloop-pipeline: get/patch that InferenceService only).
    Returns the storageUri now served."""
    from driftloop.deploy import connect, deploy, kube_config
    from driftloop.registry import Registry
    from driftloop.settings import load_settings
    from driftloop.steps import spec_from_text
    from driftloop.store import open_store

    registry = Registry(open_store(load_settings(store_uri=store_uri)))
    model = spec_from_text(spec_yaml).name
    with connect(kube_config(in_cluster=True), model, isvc, namespace) as target:
        done = deploy(registry, target, version, canary_percent, timeout=timeout_seconds)
    return done.storage_uri
