"""The same compiled pipeline, the same one image, on image data: kfp.local trains
``image-cnn`` on scikit-learn's digits (data/digits.yaml), gates and registers it; a user's
own image folder with a spec takes the same path with no code change."""

from driftloop.formats import VersionFiles, parse_schema
from driftloop.registry import Registry
from driftloop.spec import load_spec
from driftloop.store import open_store
from pipelines.run import RunRequest, run_local
from tests.conftest import ROOT
from tests.images import write_toy_images

# Tiny: the test is about the path, not the accuracy (bench/image.py measures that).
TINY = [
    {
        "family": "image-cnn",
        "params": {"max_epochs": 20, "patience": 5, "filters": 16, "embedding": 16},
    }
]


def test_kfp_local_trains_and_registers_the_digits_model(local_settings, tmp_path):
    store = open_store(local_settings)
    spec = load_spec(ROOT / "data" / "digits.yaml")
    run = run_local(
        RunRequest(spec=spec, store_uri=store.uri, trials=TINY), store, tmp_path / "r", quiet=True
    )
    assert run.version == 1, run.gate
    registry = Registry(store)
    ref = registry.resolve("digits")
    manifest = registry.manifest(ref)
    assert manifest.family == "image-cnn"
    assert {"model.safetensors", "architecture.json", "preprocessor.json"} <= set(manifest.files)
    schema = parse_schema(registry.read_file(ref, VersionFiles.SCHEMA), str(ref))
    assert schema.kind == "image" and schema.input.shape == [1, 8, 8]
    assert schema.classes == [str(d) for d in range(10)]
    assert "PASS" in manifest.lineage.evaluation.gate


def test_a_users_image_folder_runs_the_same_path(local_settings, tmp_path):
    store = open_store(local_settings)
    spec = load_spec(write_toy_images(tmp_path / "mine", n=450))
    run = run_local(
        RunRequest(spec=spec, store_uri=store.uri, trials=TINY), store, tmp_path / "r", quiet=True
    )
    assert run.version == 1, run.gate
    assert Registry(store).manifest(Registry(store).resolve("toy-images")).family == "image-cnn"
