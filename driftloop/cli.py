"""The ``driftloop`` command: every entry point's subcommands under one name.

    driftloop pipeline compile | run --local | submit --host URL
    driftloop models list | show | promote | rollback
    driftloop serve ...            (serving/cli.py)
    driftloop collector ...        (monitoring/cli.py)
    driftloop monitor run ...      (monitoring/cli.py)
    driftloop backtest ...         (replay/backtest.py)

The only module of the package that imports deployables: it dispatches to them. Settings
are built once (``driftloop.entrypoint``) and passed down; every failure a user can act
on is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from driftloop import __version__, entrypoint
from driftloop.formats import VersionFiles, VersionMetrics
from driftloop.registry import Registry
from driftloop.settings import Settings
from driftloop.store import open_store

if TYPE_CHECKING:
    from pipelines.run import LocalRun


def main(argv: Sequence[str] | None = None) -> int:
    return entrypoint.main("driftloop", __doc__.split("\n")[0], add_arguments, argv=argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"driftloop {__version__}")
    entrypoint.store_argument(p)
    sub = p.add_subparsers(title="commands")
    _pipeline_commands(sub)
    _model_commands(sub)
    # The deployables add their own subcommands.
    from monitoring.cli import add_commands as monitoring_commands
    from replay.backtest import add_commands as backtest_commands
    from serving.cli import add_commands as serving_commands

    monitoring_commands(sub)
    serving_commands(sub)
    backtest_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    """The whole command's parser (for --help texts and tests)."""
    p = argparse.ArgumentParser(prog="driftloop", description=__doc__.split("\n")[0])
    add_arguments(p)
    return p


# -- pipeline ------------------------------------------------------------------------------
def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="dataset spec YAML (e.g. data/bike_sharing.yaml)")
    p.add_argument("--start", default="", help="training window start (inclusive), e.g. 2011-01-01")
    p.add_argument("--end", default="", help="training window end (exclusive), e.g. 2012-01-01")
    p.add_argument("--trials", type=int, default=4, help="hyperparameter trials (default 4)")
    p.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="relative margin the challenger must beat the champion by (0.01 = 1%%)",
    )
    p.add_argument(
        "--no-promote",
        dest="promote",
        action="store_false",
        help="register a passing model without moving the production alias",
    )
    p.add_argument("--trigger-id", default="", help="the drift trigger this run answers")


def _pipeline_commands(sub: argparse._SubParsersAction) -> None:
    pipe = sub.add_parser("pipeline", help="compile, run or submit the training pipeline")
    psub = pipe.add_subparsers(title="pipeline commands", required=True)

    c = psub.add_parser("compile", help="write pipelines/training_pipeline.yaml")
    c.add_argument("--output", help="where to write (default: the committed package path)")
    c.set_defaults(func=_compile)

    r = psub.add_parser("run", help="run the pipeline on this machine with kfp.local")
    r.add_argument(
        "--local",
        action="store_true",
        required=True,
        help="use kfp.local's SubprocessRunner (the only runner here)",
    )
    _run_args(r)
    r.set_defaults(func=_run_local)

    s = psub.add_parser("submit", help="create a run on a Kubeflow Pipelines host")
    s.add_argument("--host", help="KFP API URL (default: $DRIFTLOOP_KFP_HOST)")
    s.add_argument("--experiment", default="driftloop")
    s.add_argument("--run-name", default=None, help="default: <dataset>-<trigger or 'manual'>")
    s.add_argument("--token", default=None, help="bearer token for the KFP API")
    s.add_argument("--namespace", default=None, help="KFP user namespace (multi-user installs)")
    s.add_argument(
        "--deploy",
        action="store_true",
        help="after the gate, canary the new version on the InferenceService and "
        "promote it once ready (rolls back if it never becomes ready)",
    )
    s.add_argument(
        "--canary",
        type=int,
        default=10,
        metavar="PERCENT",
        help="canary traffic share with --deploy (default 10)",
    )
    s.add_argument(
        "--schedule",
        default=None,
        metavar="CRON",
        help="also create a recurring run (6-field cron, e.g. '0 0 3 * * 1'): "
        "a calendar fallback behind drift triggers",
    )
    _run_args(s)
    s.set_defaults(func=_submit)


def _request(args: argparse.Namespace, store_uri: str, **extra: object):
    from driftloop.spec import load_spec
    from pipelines.run import RunRequest

    return RunRequest(
        spec=load_spec(args.spec),
        store_uri=store_uri,
        start=args.start,
        end=args.end,
        n_trials=args.trials,
        margin=args.margin,
        promote=args.promote,
        trigger_id=args.trigger_id,
        **extra,  # type: ignore[arg-type]
    )


def _compile(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from pipelines.run import COMPILED, compile_pipeline

    print(compile_pipeline(Path(args.output) if args.output else COMPILED))
    return 0


def _run_local(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.run import run_local

    store = open_store(settings)
    req = _request(args, store.uri)
    run = run_local(req, store)
    if run.restored is not None:
        print(f"{req.spec.name}: the gate restored v{run.restored}, an earlier version that")
        print("beats both the champion and the challenger on the same window; nothing new")
        print("registered.")
        print(run.gate)
    elif run.version is None:
        print(f"{req.spec.name}: the challenger did not pass the gate; nothing registered.")
        print(run.gate)
    else:
        _print_version(Registry(store), req.spec.name, run.version)
    _print_quality(run, store.uri)
    return 0


def _print_quality(run: LocalRun, store_uri: str) -> None:
    """The data-quality warnings last, where they are read, and where the report is kept."""
    kept = f" (report: {store_uri}/{run.quality_key})" if run.quality_key else ""
    print(f"data quality: {len(run.warnings)} warning(s){kept}")
    for c in run.warnings:
        print(f"  {c.column}: {c.name}: {c.detail}")


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    from driftloop.errors import ConfigError
    from pipelines.run import submit

    host = args.host or settings.kfp_host
    if not host:
        raise ConfigError("no KFP host: pass --host or set DRIFTLOOP_KFP_HOST")
    store = open_store(settings)
    req = _request(args, store.uri, deploy=args.deploy, canary_percent=args.canary)
    name = args.run_name or f"{req.spec.name}-{req.trigger_id or 'manual'}"
    done = submit(
        req, store, host, args.experiment, name, args.token, args.namespace, args.schedule
    )
    print(f"created run {done.run_id} ({name}) of pipeline version {done.version_id} on {host}")
    if done.recurring_run_id:
        print(f"created recurring run {done.recurring_run_id} ({args.schedule})")
    return 0


# -- models ------------------------------------------------------------------------------
def _model_commands(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="list, show, promote or roll back registered models")
    msub = m.add_subparsers(title="model commands", required=True)
    ls = msub.add_parser("list", help="models with their versions and aliases")
    ls.set_defaults(func=_models_list)
    sh = msub.add_parser("show", help="one version's manifest and metrics")
    sh.add_argument("model")
    sh.add_argument("--version", type=int, help="default: production")
    sh.set_defaults(func=_models_show)
    pr = msub.add_parser(
        "promote",
        help="point production at a version (--kube: serve it "
        "on the InferenceService first, canary then 100 %%)",
    )
    pr.add_argument("model")
    pr.add_argument("version", type=int)
    _kube_args(pr)
    pr.add_argument(
        "--canary",
        type=int,
        default=100,
        metavar="P",
        help="with --kube: send P %% of traffic to the new version until it is "
        "ready, then promote (default 100: no canary)",
    )
    pr.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="with --kube: seconds to wait for each rollout step (default 900)",
    )
    pr.set_defaults(func=_models_promote)
    rb = msub.add_parser(
        "rollback",
        help="restore the previous production version (--kube: on the InferenceService too)",
    )
    rb.add_argument("model")
    _kube_args(rb)
    rb.set_defaults(func=_models_rollback)


def _kube_args(p: argparse.ArgumentParser) -> None:
    from driftloop.deploy import NAMESPACE

    p.add_argument(
        "--kube",
        action="store_true",
        help="also patch the InferenceService through the Kubernetes API "
        "(kubeconfig); without it only the registry alias moves",
    )
    p.add_argument("--context", default=None, help="kubeconfig context (default: current)")
    p.add_argument("--isvc", default="", help="InferenceService name (default: the model name)")
    p.add_argument(
        "--namespace", default=NAMESPACE, help=f"InferenceService namespace (default {NAMESPACE})"
    )


def _models_list(args: argparse.Namespace, settings: Settings) -> int:
    reg = Registry(open_store(settings))
    models = reg.models()
    if not models:
        print(f"no models in {settings.store_uri}")
    for name in models:
        prod, prev = reg.alias(name, "production"), reg.alias(name, "previous")
        print(f"{name}: versions {reg.versions(name)}  production={prod}  previous={prev}")
    return 0


def _print_version(reg: Registry, model: str, version: int) -> None:
    from driftloop.registry import VersionRef

    ref = VersionRef(model, version)
    man = reg.manifest(ref)
    metrics = VersionMetrics.parse(
        reg.read_file(ref, VersionFiles.METRICS, man), f"{ref}/{VersionFiles.METRICS}"
    )
    prod = reg.alias(model, "production")
    print(f"{ref}{'  (production)' if prod == version else ''}  created {man.created}")
    window = man.lineage.window
    print(
        f"  family: {man.family}  window: [{window.start}, {window.end})  run: {man.lineage.run_id}"
    )
    print(f"  gate: {metrics.gate}")
    print("  test metrics:    " + _fmt(metrics.test))
    for name, m in metrics.baselines.items():
        print(f"  baseline {name + ':':7s} " + _fmt(m))
    if metrics.champion:
        print("  champion:        " + _fmt(metrics.champion))


def _fmt(m: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float | int))


def _models_show(args: argparse.Namespace, settings: Settings) -> int:
    reg = Registry(open_store(settings))
    ref = reg.resolve(args.model, args.version)
    _print_version(reg, ref.model, ref.version)
    return 0


def _models_promote(args: argparse.Namespace, settings: Settings) -> int:
    registry = Registry(open_store(settings))
    if not args.kube:
        registry.promote(args.model, args.version, reason="manual promote")
        print(f"{args.model}: production -> v{args.version}")
        return 0
    from driftloop.deploy import connect, deploy, kube_config

    cfg = kube_config(context=args.context)
    with connect(cfg, args.model, args.isvc, args.namespace) as isvc:
        done = deploy(registry, isvc, args.version, args.canary, timeout=args.timeout)
    print(f"{args.model}: {isvc} serves {done.storage_uri}; production -> v{args.version}")
    return 0


def _models_rollback(args: argparse.Namespace, settings: Settings) -> int:
    registry = Registry(open_store(settings))
    if not args.kube:
        version = registry.rollback(args.model)
        print(f"{args.model}: production -> v{version} (rolled back)")
        return 0
    from driftloop.deploy import connect, kube_config, rollback

    with connect(kube_config(context=args.context), args.model, args.isvc, args.namespace) as isvc:
        version = rollback(registry, isvc)
    print(f"{args.model}: {isvc} patched back; production -> v{version} (rolled back)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
