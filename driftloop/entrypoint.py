"""How every entry point starts: one parser, one settings object, one-line errors.

``driftloop`` (driftloop/cli.py) and each deployable's own ``python -m`` entry point
(``serving``, ``monitoring.collector``, ``monitoring.job``, ``replay.demo``) build their
parser the same way: a module adds its arguments with ``add_arguments(parser)`` and does
its work in ``run(args, settings)``; ``main`` parses, builds the process's settings once
(``--store`` overrides the store URI), runs, and turns every error a user can act on
(``DriftloopError``) into one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from driftloop.errors import DriftloopError
from driftloop.settings import Settings, load_settings

Run = Callable[[argparse.Namespace, Settings], int | None]


def store_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="store URI (default: $DRIFTLOOP_STORE_URI or .driftloop)")


def main(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Run | None = None,
    argv: Sequence[str] | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> int:
    """Parse ``argv``, build settings, call ``run`` (or the subcommand's ``func``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, parents=list(parents))
    add_arguments(parser)
    args = parser.parse_args(argv)
    func = getattr(args, "func", run)
    if func is None:
        parser.print_help()
        return 2
    try:
        settings = load_settings(store_uri=getattr(args, "store", None))
        return int(func(args, settings) or 0)
    except DriftloopError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
