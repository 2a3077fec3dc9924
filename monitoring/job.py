"""The drift job's entrypoint, as the CronJob runs it:

    python -m monitoring.job --model bike-sharing --trigger kfp          (the last hour)
    python -m monitoring.job --model bike-sharing --start 2012-01-01 --end 2012-01-08

The same as ``driftloop monitor run``; the logic is ``driftloop.monitor.run_window``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from driftloop import entrypoint
from driftloop.errors import ConfigError
from driftloop.settings import Settings

if TYPE_CHECKING:
    from driftloop.store import Store
    from driftloop.trigger import Backend


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Not ``shadow``: the job reads the served version's logs, and a shadow's rows are
    # under its own version (comparing them is the rollout analysis, issue #17).
    from driftloop.formats import SERVED_ENDPOINTS

    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument(
        "--endpoint",
        default="default",
        choices=SERVED_ENDPOINTS,
        help="which endpoint's traffic (the logger says which one served)",
    )
    p.add_argument("--start", help="window start, ISO time (default: end - --hours)")
    p.add_argument("--end", help="window end, ISO time (default: now, to the hour)")
    p.add_argument(
        "--hours",
        type=float,
        default=1.0,
        help="window length when --start is not given (default 1)",
    )
    p.add_argument(
        "--every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="repeat: the next window every SECONDS (without it: one window)",
    )
    p.add_argument("--policy", help="drift policy YAML (default: driftloop.policy defaults)")
    p.add_argument(
        "--trigger",
        choices=["none", "local", "kfp"],
        default="none",
        help="what a trigger starts: nothing, a local kfp.local run, or a KFP run",
    )
    p.add_argument(
        "--spec",
        help="dataset spec for retraining (default: the one registered "
        "with the production version)",
    )
    p.add_argument(
        "--retrain-days",
        type=int,
        default=180,
        help="retraining window: [end - days, end) of the source data",
    )
    p.add_argument("--trials", type=int, default=4, help="trials of the retraining run")
    p.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="relative margin the challenger must beat the champion by",
    )
    p.add_argument(
        "--report-rows",
        type=int,
        default=5_000,
        help="rows sampled for the Evidently HTML report (0: no report)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from driftloop.monitor import run_window
    from driftloop.policy import DriftPolicy, load_policy
    from driftloop.store import open_store

    check_arguments(args)
    store = open_store(settings)
    policy = load_policy(args.policy) if args.policy else DriftPolicy()
    with tempfile.TemporaryDirectory() as tmp:
        backend = _backend(args, settings, store, Path(tmp))
        while True:
            start, end = _window(args)
            r = run_window(
                store,
                args.model,
                start,
                end,
                policy=policy,
                backend=backend,
                endpoint=args.endpoint,
                retrain_days=args.retrain_days,
                report_rows=args.report_rows,
            )
            said = _outcome(r.trigger_status, r.trigger_outcome)
            trig = f" trigger={r.trigger_id} ({said})" if r.trigger_id else ""
            print(
                f"{args.model} v{r.version} {args.endpoint} [{start:%Y-%m-%d %H:%M}, "
                f"{end:%Y-%m-%d %H:%M}) rows={r.rows} drifted={r.drifted_share:.2f} "
                f"decision={'TRIGGER' if r.trigger else 'no'}{trig}: {'; '.join(r.reasons)}",
                flush=True,
            )
            if args.every is None:
                return 0
            time.sleep(args.every)


def _outcome(status: str | None, outcome: str | None) -> str:
    """``running``, or once the run settled what it did: ``promoted v3``, ``restored v1``,
    ``refused: <the gate's reasons>``, ``failed: <error>``: never just "succeeded" for a
    run whose challenger the gate refused."""
    return outcome or str(status)


# Bounds on the numbers a job accepts: beyond them a window or a retraining period cannot
# be computed (timedelta overflows) or means nothing (a negative margin admits a worse model).
LIMITS = {
    "hours": (0.0, 24.0 * 3660),  # a window of at most ten years
    "every": (0.0, 3660 * 86400.0),
    "retrain_days": (1, 3650),
    "trials": (1, 1000),
    "margin": (0.0, 1.0),
    "report_rows": (0, 1_000_000),
}


def check_arguments(args: argparse.Namespace) -> None:
    """One ConfigError naming the first number out of range (NaN included)."""
    for name, (lo, hi) in LIMITS.items():
        value = getattr(args, name)
        if value is None and name == "every":
            continue
        inside = lo < value <= hi if name in ("hours", "every") else lo <= value <= hi
        if name == "margin":
            inside = lo <= value < hi
        if not inside:  # NaN compares False: refused too
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value} is out of range {lo}..{hi}")


def _window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    from driftloop.payloads import naive_utc

    def parse(s: str) -> datetime:
        try:
            t = naive_utc(s)
        except (ValueError, OverflowError) as e:
            raise ConfigError(f"not an ISO time: {s!r}") from e
        assert t is not None  # a string in, a datetime out
        return t

    now = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    end = parse(args.end) if args.end and args.every is None else now
    start = (
        parse(args.start)
        if args.start and args.every is None
        else end - timedelta(hours=args.hours)
    )
    if start >= end:
        raise ConfigError(f"empty window: start {start} is not before end {end}")
    return start, end


def _backend(
    args: argparse.Namespace, settings: Settings, store: Store, tmp: Path
) -> Backend | None:
    from driftloop.formats import VersionFiles
    from driftloop.registry import Registry
    from monitoring.backends import KfpBackend, LocalBackend

    if args.trigger == "none":
        return None
    spec_path = args.spec
    if spec_path is None:  # the spec the production version was trained from
        ref = Registry(store).resolve(args.model)
        spec_path = str(tmp / "dataset.yaml")
        Path(spec_path).write_bytes(Registry(store).read_file(ref, VersionFiles.DATASET))
    if args.trigger == "local":
        return LocalBackend(
            spec_path=spec_path, store_uri=store.uri, n_trials=args.trials, margin=args.margin
        )
    if not settings.kfp_host:
        raise ConfigError("--trigger kfp needs DRIFTLOOP_KFP_HOST (the KFP API URL)")
    return KfpBackend(
        host=settings.kfp_host,
        spec_path=spec_path,
        store=store,
        namespace=settings.kfp_namespace,
        n_trials=args.trials,
        margin=args.margin,
    )


def main(argv: list[str] | None = None) -> int:
    def arguments(p: argparse.ArgumentParser) -> None:
        entrypoint.store_argument(p)
        add_arguments(p)

    return entrypoint.main("python -m monitoring.job", __doc__.split("\n")[0], arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
