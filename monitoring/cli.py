"""``driftloop collector``: run the payload collector; ``driftloop monitor run``: the drift job.

Added to the ``driftloop`` command through ``COMMAND_MODULES`` in driftloop/cli.py; the
store comes from the global ``--store`` / ``DRIFTLOOP_STORE_URI`` like every command.
"""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    from monitoring.collector import add_arguments
    from monitoring.collector import run as run_collector

    p = sub.add_parser("collector", help="receive KServe payload-logger events, write Parquet")
    add_arguments(p)
    p.set_defaults(func=run_collector)

    from monitoring.job import add_arguments as job_arguments
    from monitoring.job import run as run_job

    m = sub.add_parser("monitor", help="drift jobs over logged traffic")
    msub = m.add_subparsers(title="monitor commands", required=True)
    r = msub.add_parser("run", help="one drift window (or --every: one per period)")
    job_arguments(r)
    r.set_defaults(func=run_job)
