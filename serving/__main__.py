"""The container entrypoint, with KServe's conventions::

    python -m serving --model_dir /mnt/models --model_name bike-sharing --http_port 8080 \
        [--logger_url http://collector/ --logger_token_file /secrets/collector/token] \
        [--max_batch_rows 1000] [--torch_threads 1]

``--model_dir`` is a registry version directory (the InferenceService ``storageUri``,
copied by KServe's storage initializer); every file is checked against ``manifest.json``
and a mismatch refuses to start. All of kserve's ModelServer flags are accepted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from driftloop import entrypoint
from driftloop.errors import DriftloopError
from driftloop.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    """driftloop's flags; kserve's ModelServer flags come in as a parent parser."""
    from driftloop.formats import ENDPOINTS
    from serving.model import DEFAULT_MAX_BATCH_ROWS, DEFAULT_TORCH_THREADS, threads_arg

    p.add_argument("--model_dir", default="/mnt/models", help="registry version directory")
    p.add_argument(
        "--max_batch_rows",
        type=int,
        default=DEFAULT_MAX_BATCH_ROWS,
        help="largest batch one request may send (default %(default)s)",
    )
    p.add_argument(
        "--torch_threads",
        type=threads_arg,
        default=DEFAULT_TORCH_THREADS,
        help="torch intra-op threads (default %(default)s: lowest latency per request)",
    )
    p.add_argument(
        "--logger_url",
        default=None,
        help="send KServe-style payload CloudEvents here (the collector)",
    )
    p.add_argument(
        "--logger_token_file",
        default=None,
        help="file holding the collector's bearer token (default: the collector_token "
        "setting, $DRIFTLOOP_COLLECTOR_TOKEN[_FILE])",
    )
    p.add_argument(
        "--inference_service", default=None, help="ce-inferenceservicename (default: --model_name)"
    )
    p.add_argument("--namespace", default="default", help="ce-namespace")
    p.add_argument(
        "--endpoint",
        default="default",
        choices=ENDPOINTS,
        help="ce-endpoint: which InferenceService endpoint this pod serves",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from serving.artifacts import load_dir
    from serving.model import Predictor
    from serving.payload_log import emitter_for, logger_token

    torch.set_num_threads(args.torch_threads)
    service = args.inference_service or args.model_name
    token = logger_token(args.logger_token_file, settings) if args.logger_url else None
    emitter = emitter_for(
        args.logger_url, args.model_name, service, args.namespace, args.endpoint, token
    )
    model_dir = Path(args.model_dir)
    predictor = Predictor(
        args.model_name, lambda: load_dir(model_dir), args.max_batch_rows, emitter
    )
    try:
        predictor.load()
    except DriftloopError as e:
        logging.getLogger("serving").error("refusing to start: %s", e)
        raise
    from kserve.model_server import app

    from serving.server import install_error_handlers, model_server

    install_error_handlers(app)
    model_server().start([predictor])
    return 0


def main(argv: list[str] | None = None) -> int:
    from kserve.model_server import parser as kserve_parser

    return entrypoint.main(
        "python -m serving", __doc__.split("\n")[0], add_arguments, run, argv, [kserve_parser]
    )


if __name__ == "__main__":
    sys.exit(main())
