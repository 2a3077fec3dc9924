"""``driftloop collector [--port P] [--host H]``: run the payload collector.

Added to the ``driftloop`` command through ``COMMAND_MODULES`` in driftloop/cli.py; the
store comes from the global ``--store`` / ``DRIFTLOOP_STORE_URI`` like every command.
"""

from __future__ import annotations

import argparse

from driftloop.settings import Settings


def add_commands(sub: argparse._SubParsersAction) -> None:
    from monitoring.collector import add_arguments

    p = sub.add_parser("collector", help="receive KServe payload-logger events, write Parquet")
    add_arguments(p)
    p.set_defaults(func=_collector)


def _collector(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from monitoring.collector import config_from, serve

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(settings, args.host, args.port, config_from(args))
    return 0
