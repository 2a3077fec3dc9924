"""The same compiled pipeline, the same one image, on a recommender: kfp.local trains
``recsys-mf`` on a user's own interactions file with a spec (no code change), gates it
against most-popular and ALS, refits and registers it."""

from driftloop.formats import VersionFiles, parse_schema
from driftloop.registry import Registry
from driftloop.spec import load_spec
from driftloop.store import open_store
from pipelines.run import RunRequest, run_local
from tests.interactions import write_toy_interactions

TINY = [{"family": "recsys-mf", "params": {"max_epochs": 40, "dim": 16, "lr": 1e-2, "l2": 1e-3}}]


def test_kfp_local_trains_and_registers_a_recommender(local_settings, tmp_path):
    store = open_store(local_settings)
    spec = load_spec(write_toy_interactions(tmp_path / "mine", fmt="parquet"))
    run = run_local(
        RunRequest(spec=spec, store_uri=store.uri, trials=TINY), store, tmp_path / "r", quiet=True
    )
    assert run.version == 1, run.gate
    registry = Registry(store)
    ref = registry.resolve("toy-recsys")
    manifest = registry.manifest(ref)
    assert manifest.family == "recsys-mf"
    assert {"model.safetensors", "vocab.json", "recommender.json"} <= set(manifest.files)
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    assert schema.kind == "interactions" and schema.items == 60 and schema.users == 80
    assert "beats the floor, the popular baseline" in manifest.lineage.evaluation.gate
    assert manifest.lineage.train_rows == 2000  # refit on the whole window
