"""The real pipeline, run by kfp.local on a user's Parquet file + spec (no code change),
and the CLI's answers to bad input: one line, exit 1, nothing registered."""

import pytest

from driftloop.cli import main
from driftloop.gate import gate_records
from driftloop.registry import Registry
from driftloop.settings import load_settings
from driftloop.spec import load_spec
from driftloop.store import open_store
from pipelines.run import RunRequest, preflight, run_local
from tests.toy import toy_frame, write_toy

FAST = [
    {
        "family": "tabular-torch",
        "params": {
            "max_epochs": 40,
            "patience": 6,
            "hidden": 64,
            "layers": 2,
            "lr": 0.004,
            "seed": s,
        },
    }
    for s in (0, 1)
]


@pytest.fixture
def toy_store(tmp_path, local_settings):
    spec = load_spec(write_toy(tmp_path / "user", task="multiclass", fmt="parquet"))
    return spec, open_store(local_settings)


def test_pipeline_trains_gates_registers_then_gate_protects_the_champion(toy_store, tmp_path):
    spec, store = toy_store
    registry = Registry(store)
    req = RunRequest(spec=spec, store_uri=store.uri, trials=FAST, end="2020-02-01")
    run = run_local(req, store, tmp_path / "run1", quiet=True)
    assert run.version == 1, run.gate
    assert registry.alias("toy", "production") == 1
    man = registry.manifest(registry.resolve("toy"))
    assert {
        "model.safetensors",
        "preprocessor.json",
        "schema.json",
        "metrics.json",
        "card.md",
        "reference/sample.parquet",
    } <= set(man.files)
    assert man.family == "tabular-torch"
    lineage = man.lineage
    assert (lineage.window.start, lineage.window.end) == ("", "2020-02-01")
    assert len(lineage.dataset_sha256) == 64 and lineage.run_id
    assert lineage.evaluation.gate.startswith("PASS")

    # A challenger that must beat the champion by 90 % cannot: nothing new registered.
    strict = RunRequest(
        spec=spec, store_uri=store.uri, trials=FAST[:1], end="2020-02-01", margin=0.9
    )
    run = run_local(strict, store, tmp_path / "run2", quiet=True)
    assert run.version is None and "does not beat champion" in run.gate
    assert registry.versions("toy") == [1] and registry.alias("toy", "production") == 1
    # Both decisions are kept in the store, the refusal's reasons included: the run that
    # registered v1 is the first record's run.
    passed, refused = gate_records(store, "toy")
    assert (passed.verdict, refused.verdict) == ("promote", "refuse")
    assert passed.run_id == lineage.run_id and refused.run_id not in ("", lineage.run_id)
    assert any("does not beat champion v1" in r for r in refused.reasons)
    assert run.restored is None


def _cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    ("frame_change", "message"),
    [
        (lambda f: f.drop(columns=["colour"]), "named in the spec are not in the data"),
        (lambda f: f.assign(b=float("nan")), "column 'b': missing: every value is missing"),
        (lambda f: f.assign(y="low"), "column 'y': label set: 1 class"),
        (lambda f: f.assign(a="text"), "numeric column 'a' has non-numeric values"),
    ],
)
def test_bad_data_is_one_line_and_registers_nothing(tmp_path, capsys, frame_change, message):
    spec_path = write_toy(
        tmp_path, task="multiclass", frame=frame_change(toy_frame(task="multiclass"))
    )
    store = tmp_path / "store"
    code, err = _cli(
        capsys, "--store", str(store), "pipeline", "run", "--local", "--spec", str(spec_path)
    )
    assert code == 1 and len(err) == 1 and message in err[0], err
    assert not (store / "models").exists()


def test_missing_spec_empty_window_and_bad_store(tmp_path, capsys):
    spec_path = write_toy(tmp_path)
    code, err = _cli(capsys, "pipeline", "run", "--local", "--spec", str(tmp_path / "nope.yaml"))
    assert code == 1 and err == [
        f"driftloop: error: dataset spec {tmp_path / 'nope.yaml'} does not exist"
    ]
    code, err = _cli(
        capsys,
        "--store",
        str(tmp_path / "s"),
        "pipeline",
        "run",
        "--local",
        "--spec",
        str(spec_path),
        "--start",
        "2031-01-01",
    )
    assert code == 1 and "holds no rows" in err[0] and len(err) == 1
    code, err = _cli(capsys, "--store", "ftp://nowhere", "models", "list")
    assert code == 1 and "must be a path, file://path or s3://bucket/prefix" in err[0]


def test_unreachable_s3_store_and_kfp_host(tmp_path, capsys, monkeypatch, s3_settings):
    from tests.conftest import free_port

    port = free_port()
    monkeypatch.setenv("DRIFTLOOP_S3_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("DRIFTLOOP_S3_SECURE", "false")
    code, err = _cli(capsys, "--store", "s3://bucket/x", "models", "list")
    assert code == 1 and len(err) == 1 and "cannot list s3://bucket/x/models" in err[0]
    spec = str(write_toy(tmp_path))
    submit = ["pipeline", "submit", "--host", f"http://127.0.0.1:{port}", "--spec", spec]
    # The default, local store: the cluster's pods could neither read nor write it.
    code, err = _cli(capsys, "--store", str(tmp_path / "store"), *submit)
    assert code == 1 and len(err) == 1 and "the cluster cannot use the store" in err[0]
    # A reachable S3 store (the data is uploaded to it), but no KFP API at that host.
    monkeypatch.setenv("DRIFTLOOP_S3_ENDPOINT", s3_settings.s3_endpoint)
    monkeypatch.setenv("DRIFTLOOP_S3_ACCESS_KEY", "test")
    monkeypatch.setenv("DRIFTLOOP_S3_SECRET_KEY", "test")
    code, err = _cli(capsys, "--store", s3_settings.store_uri, *submit)
    assert code == 1 and len(err) == 1
    assert f"cannot create a run on Kubeflow Pipelines at http://127.0.0.1:{port}" in err[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--start", "not-a-date"], "start 'not-a-date' is not an ISO 8601 time"),
        (["--end", "2012-13-45"], "end '2012-13-45' is not an ISO 8601 time"),
        (["--start", "2012-02-01", "--end", "2012-01-01"], "start 2012-02-01 is not before end"),
        (["--margin", "-0.5"], "a negative margin would let a worse challenger through"),
        (["--margin", "nan"], "--margin must be in [0, 1)"),
        (["--trials", "0"], "--trials must be in 1..1000"),
    ],
)
def test_bad_run_flags_are_one_line(tmp_path, capsys, flags, message):
    spec = str(write_toy(tmp_path))
    store = tmp_path / "store"
    code, err = _cli(
        capsys, "--store", str(store), "pipeline", "run", "--local", "--spec", spec, *flags
    )
    assert code == 1 and len(err) == 1 and message in err[0], err
    assert not (store / "models").exists()


def test_the_data_quality_report_is_kept_and_its_warnings_end_the_output(tmp_path, capsys):
    """A successful run removes its step outputs; the validate step's report stays (in the
    store, under the run) and its warnings are the last lines `pipeline run` prints."""
    frame = toy_frame(task="multiclass").drop(index=range(300, 340))  # a 41-hour hole
    spec_path = write_toy(tmp_path / "user", task="multiclass", frame=frame)
    store_dir = tmp_path / "store"
    code = main(
        ["--store", str(store_dir), "pipeline", "run", "--local", "--spec", str(spec_path)]
        + ["--trials", "1", "--end", "2020-02-10"]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    kept = sorted((store_dir / "runs" / "toy").glob("*/data-quality.md"))
    assert len(kept) == 1
    assert out[-2:] == [
        f"data quality: 1 warning(s) (report: file://{store_dir}/runs/toy/{kept[0].parent.name}"
        "/data-quality.md)",
        "  when: time gaps: 1 gap(s) over 1d; the largest 1d 17h, from 2020-01-13 11:00 to "
        "2020-01-15 04:00; expected no gap over 1d (24 x the median spacing 1h; or set "
        "quality.max_gap)",
    ]
    report = kept[0].read_text()
    assert report.startswith("# Data quality: toy") and "| time gaps | `when` | warn |" in report


@pytest.mark.parametrize("name", ["bike_sharing", "bank_marketing"])
def test_preflight_checks_a_bundled_spec_against_its_data_in_seconds(tmp_path, name):
    import time

    from tests.conftest import ROOT

    spec = load_spec(ROOT / "data" / f"{name}.yaml")
    store = open_store(load_settings(store_uri=str(tmp_path / "store")))
    began = time.perf_counter()
    report = preflight(RunRequest(spec=spec, store_uri=store.uri), store)
    assert time.perf_counter() - began < 5
    assert report.rows > 10_000 and report.failures == []


def test_preflight_fails_with_the_validate_steps_own_message(tmp_path):
    """One code path: the preflight's error is the pipeline validate step's, word for word."""
    from driftloop.errors import ValidationFailed
    from driftloop.steps import ingest, validate_dataset

    frame = toy_frame(task="binary")
    spec = load_spec(write_toy(tmp_path, task="binary", frame=frame, positive_label="POS"))
    store = open_store(load_settings(store_uri=str(tmp_path / "store")))
    with pytest.raises(ValidationFailed) as early:
        preflight(RunRequest(spec=spec, store_uri=store.uri), store)
    ingest(spec, "", "", tmp_path / "data.parquet")
    with pytest.raises(ValidationFailed) as step:
        validate_dataset(tmp_path / "data.parquet", spec, tmp_path / "report.md")
    assert (
        str(early.value)
        == str(step.value)
        == (
            "data validation failed: column 'y': positive label: positive_label 'POS' is not one "
            "of the target's values ['neg', 'pos']; expected one of them, spelled exactly as in "
            "the data"
        )
    )


def test_a_spec_mistake_fails_before_the_training_stack_loads(tmp_path):
    """In a fresh process: the one-line error comes before kfp, torch, sklearn, kserve or
    evidently is imported (it used to take 8 s of imports; now about 1.5 s in all)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    spec = write_toy(tmp_path, frame=toy_frame().drop(columns=["b"]))
    code = (
        "import sys\n"
        "from driftloop.cli import main\n"
        f"code = main(['--store', {str(tmp_path / 's')!r}, 'pipeline', 'run', '--local',"
        f" '--spec', {str(spec)!r}])\n"
        "heavy = ('kfp', 'torch', 'sklearn', 'kserve', 'evidently', 'lightgbm')\n"
        "print(code, [m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.stdout.strip() == "1 []", done.stderr
    assert "column(s) ['b'] named in the spec are not in the data" in done.stderr
