"""Compile, run locally (kfp.local) and submit (kfp.Client) the training pipeline."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import io
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from driftloop.data import read_uri
from driftloop.errors import ConfigError, DataError, DriftloopError
from driftloop.registry import Registry
from driftloop.spec import DatasetSpec
from driftloop.store import Store
from driftloop.validation import Check, ValidationReport

COMPILED = Path(__file__).with_name("training_pipeline.yaml")
# The identity pipeline pods run as (manifests/base/pipeline-rbac.yaml): the only one
# allowed to patch the InferenceService at deploy time.
RUN_SERVICE_ACCOUNT = "driftloop-pipeline"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """kfp.local colours its log lines; errors and parsers want plain text."""
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class RunRequest:
    """Everything one training run needs; becomes the pipeline's parameters."""

    spec: DatasetSpec
    store_uri: str
    start: str = ""
    end: str = ""
    n_trials: int = 4
    margin: float = 0.0
    promote: bool = True
    trigger_id: str = ""
    seed: int = 0
    trials: list[dict] | None = None  # explicit hyperparameter sets instead of sampling
    deploy: bool = False  # in the cluster: canary the new version on the InferenceService
    canary_percent: int = 10

    def __post_init__(self) -> None:
        """Refuse what no run could use, before anything starts (one line each)."""
        from driftloop.data import check_window

        check_window(self.start or None, self.end or None)
        if not 1 <= self.n_trials <= 1000:
            raise ConfigError(f"--trials must be in 1..1000, not {self.n_trials}")
        if not 0.0 <= self.margin < 1.0:  # NaN fails both comparisons
            raise ConfigError(
                f"--margin must be in [0, 1) (a relative improvement; 0.01 = 1 %), not "
                f"{self.margin}: a negative margin would let a worse challenger through"
            )
        if not 1 <= self.canary_percent <= 100:
            raise ConfigError(f"--canary must be in 1..100, not {self.canary_percent}")

    def arguments(self) -> dict:
        from driftloop.steps import default_trials, spec_to_text

        trials = self.trials or default_trials(self.spec.kind, self.n_trials, self.seed)
        return {
            "spec_yaml": spec_to_text(self.spec),
            "store_uri": self.store_uri,
            "start": self.start,
            "end": self.end,
            "trials": trials,
            "margin": self.margin,
            "promote": self.promote,
            "trigger_id": self.trigger_id,
            "deploy": self.deploy,
            "canary_percent": self.canary_percent,
        }


def stage(req: RunRequest, store: Store) -> RunRequest:
    """The request with a spec the cluster can read: every file the spec names on this
    machine (its data, its rules) is uploaded to the store, content-addressed
    (``datasets/<sha256>/<name>``), and named by its ``s3://`` URI. The pipeline's pods
    cannot read a laptop's disk, nor write a local store: both are refused."""
    from driftloop.formats import dataset_key
    from driftloop.registry import sha256

    if not req.store_uri.startswith("s3://"):
        raise ConfigError(
            f"the cluster cannot use the store {req.store_uri!r}: submit needs an "
            "s3://bucket/prefix store (--store or DRIFTLOOP_STORE_URI) its pods can reach"
        )
    uploaded = {}
    for path in req.spec.local_files:
        if Path(path.removeprefix("file://")).is_dir():
            raise ConfigError(
                f"{path} is a folder of images: the cluster reads data from the store, so "
                "pack them as Parquet with an image-bytes column (image.bytes_column) first"
            )
        data = read_uri(path, "dataset spec file")
        key = dataset_key(sha256(data), Path(path.removeprefix("file://")).name)
        if not store.exists(key):
            store.put(key, data)
        uploaded[path] = f"{store.uri}/{key}"
    if not uploaded:
        return req
    spec = req.spec
    source = spec.source.model_copy(update={"path": uploaded.get(spec.source_uri, spec.source_uri)})
    rules = uploaded.get(spec.rules_uri, spec.rules_uri) if spec.rules_uri else None
    staged = spec.model_copy(update={"source": source, "rules": rules})
    return dataclasses.replace(req, spec=staged)


def compile_pipeline(path: Path = COMPILED) -> Path:
    from kfp import compiler

    from pipelines.training import training_pipeline

    compiler.Compiler().compile(training_pipeline, str(path))
    return path


def preflight(req: RunRequest, store: Store) -> ValidationReport:
    """Fail fast, in-process, with one clear message: spec, source, window, validation and
    store are checked before any step starts (the pipeline checks again, step by step).

    One code path with the pipeline's ingest and validate steps: the same ``load_window``
    (which reads only the spec's columns) and the same ``validate``, so a mistake fails
    here, in about a second for the bundled datasets, with the message the validate step
    would give. Returns the report (its warnings are shown after the run)."""
    from driftloop.data import load_window
    from driftloop.validation import validate

    report = validate(load_window(req.spec, req.start or None, req.end or None), req.spec)
    report.raise_if_failed()
    store.list("models")
    return report


@dataclass(frozen=True)
class LocalRun:
    version: int | None  # the registered version; None when the gate did not pass
    gate: str  # the gate's report (Markdown)
    root: Path | None  # the steps' outputs (kept when a workdir was given)
    log: str = ""  # kfp.local's output when run quietly (step start/finish lines)
    restored: int | None = None  # an earlier version the gate chose over the challenger
    # The validate step's data-quality report, kept in the store (run_file_key) whatever
    # the outcome, and its warnings (the checks that did not pass but did not fail).
    quality_key: str | None = None
    warnings: list[Check] = dataclasses.field(default_factory=list)


def run_local(
    req: RunRequest, store: Store, workdir: Path | None = None, quiet: bool = False
) -> LocalRun:
    """Run the pipeline with kfp.local's SubprocessRunner in this Python environment.

    Step outputs go to ``workdir`` when given (kept); otherwise to a temporary directory
    that is removed after a successful run and kept, and named, after a failed one."""
    checked = preflight(req, store)  # first: a mistake fails before kfp and torch load
    from kfp import local

    from pipelines.training import training_pipeline

    before = set(Registry(store).versions(req.spec.name))
    serving = Registry(store).alias(req.spec.name, "production")
    root = workdir or Path(tempfile.mkdtemp(prefix="driftloop-kfp-"))
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / "out"),
        workspace_root=str(root / "workspace"),
    )
    sink = io.StringIO()
    # kfp.local indents output by swapping builtins.print per task; with ParallelFor
    # threads the swaps interleave and can leave it swapped. Put it back afterwards.
    original_print = builtins.print
    try:
        with (
            contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext(),
            warnings.catch_warnings(),
        ):
            # kfp.local warns that our image is "non-Python"; this environment is the
            # image's environment (driftloop installed), which is what the steps need.
            warnings.filterwarnings(
                "ignore", message=".*non-Python base image", category=RuntimeWarning
            )
            training_pipeline(**req.arguments())
    except RuntimeError as e:
        plain = strip_ansi(str(e))
        raise DataError(f"the local pipeline run failed: {plain} (outputs under {root})") from e
    finally:
        builtins.print = original_print
    new = sorted(set(Registry(store).versions(req.spec.name)) - before)
    now = Registry(store).alias(req.spec.name, "production")
    restored = now if not new and now != serving else None
    reports = sorted((root / "out").glob("*/gate/report"))
    gate = reports[-1].read_text() if reports else "(no gate report)"
    quality_key = _keep_quality_report(root, req.spec.name, store)
    if workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return LocalRun(
        new[-1] if new else None,
        gate,
        workdir,
        sink.getvalue(),
        restored,
        quality_key,
        checked.warnings,
    )


def _keep_quality_report(root: Path, model: str, store: Store) -> str | None:
    """The validate step's report, put in the store under its run's id (the run's
    output directory, ``<pipeline>-<timestamp>``) before the outputs are removed."""
    from driftloop.formats import DATA_QUALITY_REPORT, run_file_key

    found = sorted((root / "out").glob("*/validate/report"))
    if not found:
        return None
    key = run_file_key(model, found[-1].parents[1].name, DATA_QUALITY_REPORT)
    store.put(key, found[-1].read_bytes())
    return key


@contextlib.contextmanager
def kfp_client(host: str, token: str | None = None, namespace: str | None = None):
    """A kfp.Client that closes its connections afterwards. kfp.Client has no close(); its
    service APIs share one kfp_server_api.ApiClient whose close() ends only a thread pool,
    so the urllib3 pool holding the sockets is cleared too."""
    import kfp

    client = kfp.Client(host=host, existing_token=token, namespace=namespace)
    try:
        yield client
    finally:
        api = client._run_api.api_client
        api.close()
        api.rest_client.pool_manager.clear()


def upload(client, package: Path = COMPILED) -> tuple[str, str]:
    """The pipeline and its version named after the package version, uploaded once:
    (pipeline id, version id). Re-submitting the same release reuses them."""
    import json

    from driftloop import __version__
    from pipelines.training import PIPELINE_NAME

    version_name = f"{PIPELINE_NAME}-{__version__}"
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(package), pipeline_name=PIPELINE_NAME)
        pipeline_id = pipeline.pipeline_id
    flt = json.dumps(
        {
            "predicates": [
                {"operation": "EQUALS", "key": "display_name", "stringValue": version_name}
            ]
        }
    )
    found = client.list_pipeline_versions(pipeline_id, filter=flt).pipeline_versions or []
    if found:
        return pipeline_id, found[0].pipeline_version_id
    version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


@dataclass(frozen=True)
class Submitted:
    run_id: str
    pipeline_id: str
    version_id: str
    recurring_run_id: str | None = None


def submit(
    req: RunRequest,
    store: Store,
    host: str,
    experiment: str,
    run_name: str,
    token: str | None = None,
    namespace: str | None = None,
    schedule: str | None = None,
) -> Submitted:
    """Upload the spec's local files to the store (``stage``) and the compiled pipeline
    (once per release), then create a run of that version on a Kubeflow Pipelines host;
    with ``schedule`` (a 6-field KFP cron expression) also a recurring run: the calendar
    fallback behind drift-triggered retraining. The spec is checked against its data first
    (``preflight``): a mistake fails here in seconds, not in the cluster's first step."""
    preflight(req, store)  # before staging: local files are read where they are
    req = stage(req, store)
    if not COMPILED.exists():
        compile_pipeline()
    try:
        with kfp_client(host, token, namespace) as client:
            return create_run(client, req, experiment, run_name, schedule)
    except DriftloopError:
        raise
    except Exception as e:  # connection refused, 401, 404 from the KFP API
        raise ConfigError(
            f"cannot create a run on Kubeflow Pipelines at {host}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e


def create_run(
    client,
    req: RunRequest,
    experiment: str,
    run_name: str,
    schedule: str | None,
) -> Submitted:
    pipeline_id, version_id = upload(client)
    exp = client.create_experiment(experiment, namespace=client.get_user_namespace() or None)
    args = req.arguments()
    run = client.run_pipeline(
        exp.experiment_id,
        run_name,
        params=args,
        pipeline_id=pipeline_id,
        version_id=version_id,
        enable_caching=False,
        service_account=RUN_SERVICE_ACCOUNT,
    )
    recurring = None
    if schedule:
        recurring = client.create_recurring_run(
            exp.experiment_id,
            f"{run_name}-schedule",
            cron_expression=schedule,
            params=args,
            pipeline_id=pipeline_id,
            version_id=version_id,
            max_concurrency=1,
            no_catchup=True,
            enable_caching=False,
            service_account=RUN_SERVICE_ACCOUNT,
        ).recurring_run_id
    return Submitted(str(run.run_id), pipeline_id, version_id, recurring)
