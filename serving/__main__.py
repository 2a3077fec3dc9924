"""The container entrypoint, with KServe's conventions::

    python -m serving --model_dir /mnt/models --model_name bike-sharing --http_port 8080 \
        [--grpc_port 8081] [--grpc_host 0.0.0.0] [--enable_grpc true] \
        [--enable_repository_api false] \
        [--logger_url http://collector/ --logger_token_file /secrets/collector/token] \
        [--max_batch_rows 1000] [--torch_threads 1] [--shadow_version 4 [--shadow_share 1.0]]

``--model_dir`` is a registry version directory (the InferenceService ``storageUri``,
copied by KServe's storage initializer); every file is checked against ``manifest.json``
and a mismatch refuses to start. All of kserve's ModelServer flags are accepted. REST
binds every address (kserve's ModelServer); gRPC (the Open Inference Protocol, driftloop's
servicer) binds ``--grpc_host``. Model load/unload is refused unless
``--enable_repository_api true``.

``--shadow_version N`` loads registry version N of the same model from the store (the
``store_uri`` setting, ``$DRIFTLOOP_STORE_URI``), verified as it is downloaded, to score
``--shadow_share`` of the requests after each answer (``serving.shadow``); one that fails
to load is logged and on ``/metrics``, and the champion serves regardless.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from driftloop import entrypoint
from driftloop.errors import DriftloopError
from driftloop.settings import Settings

if TYPE_CHECKING:
    from serving.shadow import Shadow


def add_arguments(p: argparse.ArgumentParser) -> None:
    """driftloop's flags; kserve's ModelServer flags come in as a parent parser."""
    from kserve.utils.utils import strtobool

    from driftloop.formats import SERVED_ENDPOINTS
    from serving.options import (
        DEFAULT_MAX_BATCH_ROWS,
        DEFAULT_TORCH_THREADS,
        share_arg,
        threads_arg,
    )

    p.epilog = (  # kserve's own flags do not say where REST binds
        f"Binds: REST on every address (0.0.0.0) at --http_port (default "
        f"{p.get_default('http_port')}); gRPC on --grpc_host at --grpc_port (default "
        f"0.0.0.0:{p.get_default('grpc_port')})."
    )
    p.add_argument("--model_dir", default="/mnt/models", help="registry version directory")
    p.add_argument(
        "--grpc_host",
        default="0.0.0.0",
        help="address the gRPC server binds (default %(default)s: every address of the pod)",
    )
    p.add_argument(
        "--enable_repository_api",
        type=strtobool,
        default=False,
        help="allow model load/unload over HTTP and gRPC (default false: a 403 / "
        "PERMISSION_DENIED; when true anyone who reaches the port can unload the model, "
        "and readiness then fails until it is loaded again)",
    )
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
        choices=SERVED_ENDPOINTS,
        help="ce-endpoint: which InferenceService endpoint this pod serves",
    )
    p.add_argument(
        "--shadow_version",
        type=int,
        default=None,
        help="also score requests with this registry version of the model, read from the "
        "store, after each answer; logged as endpoint shadow (default: no shadow)",
    )
    p.add_argument(
        "--shadow_share",
        type=share_arg,
        default=1.0,
        help="fraction of requests the shadow scores (default %(default)s: all)",
    )


def shadow_for(args: argparse.Namespace, settings: Settings) -> Shadow | None:
    """The ``--shadow_version`` to load beside ``--model_dir``: that version of the same
    registered model (named in the served version's manifest), from the settings' store.
    Nothing is read here: a store or version that fails fails the shadow's load alone."""
    if args.shadow_version is None:
        return None
    from driftloop.registry import Registry, VersionRef
    from driftloop.store import open_store
    from serving.artifacts import Bundle, load_from_registry, read_manifest
    from serving.shadow import Shadow

    model_dir, version = Path(args.model_dir), args.shadow_version

    def load() -> Bundle:
        ref = VersionRef(read_manifest(model_dir).model, version)
        return load_from_registry(Registry(open_store(settings)), ref)

    return Shadow(args.model_name, version, load, args.shadow_share)


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
    shadow = shadow_for(args, settings)
    predictor = Predictor(
        args.model_name, lambda: load_dir(model_dir), args.max_batch_rows, emitter, shadow
    )
    try:
        predictor.load()
    except DriftloopError as e:
        logging.getLogger("serving").error("refusing to start: %s", e)
        raise
    from kserve.model_server import app

    from serving import rest
    from serving.grpc_server import GrpcServer
    from serving.server import model_server

    server = model_server(enable_grpc=False)  # kserve's own gRPC servicer: replaced below
    rest.install(app, server, args.enable_repository_api)
    if args.enable_grpc:
        grpc = GrpcServer(
            server,
            args.grpc_host,
            args.grpc_port,
            args.enable_repository_api,
            max_workers=args.max_threads,
            max_message_bytes=args.grpc_max_receive_message_length,
        )
        server.servers.append(grpc.serve())  # ModelServer.start gathers these in its loop
        server._grpc_server = grpc  # and ModelServer.stop (SIGTERM) stops this one
    server.start([predictor])
    return 0


def main(argv: list[str] | None = None) -> int:
    from kserve.model_server import parser as kserve_parser

    return entrypoint.main(
        "python -m serving", __doc__.split("\n")[0], add_arguments, run, argv, [kserve_parser]
    )


if __name__ == "__main__":
    sys.exit(main())
