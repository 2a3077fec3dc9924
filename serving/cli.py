"""``driftloop serve``: the predictor on this machine, following the registry.

    driftloop serve --model bike-sharing                 # production alias, hot-swapped
    driftloop serve --model bike-sharing --version 3     # pinned: no swapping
    driftloop serve --model bike-sharing --logger-url http://127.0.0.1:8090/ --port 8080 \
        [--logger-token-file token.txt]
    driftloop serve --model bike-sharing --grpc-port 8081  # and the OIP over gRPC
    driftloop serve --model bike-sharing --shadow-version 4 [--shadow-share 0.5] \
        --logger-url http://127.0.0.1:8090/     # v4 scores in shadow, logged as shadow

Binds 127.0.0.1 unless ``--host`` says otherwise (REST and gRPC alike). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse

from driftloop.errors import ConfigError
from driftloop.registry import Registry, VersionRef
from driftloop.settings import Settings
from driftloop.store import open_store


def add_commands(sub: argparse._SubParsersAction) -> None:
    from driftloop.formats import SERVED_ENDPOINTS
    from serving.options import (
        DEFAULT_MAX_BATCH_ROWS,
        DEFAULT_TORCH_THREADS,
        share_arg,
        threads_arg,
    )

    s = sub.add_parser("serve", help="serve a registered model with KServe's model server")
    s.add_argument("--model", help="registered model (default: the only one in the store)")
    pick = s.add_mutually_exclusive_group()
    pick.add_argument("--version", type=int, help="serve this version (no hot swap)")
    pick.add_argument(
        "--alias",
        default="production",
        help="follow this alias and hot-swap when it moves (default production)",
    )
    s.add_argument("--port", type=int, default=8080, help="REST port (default %(default)s)")
    s.add_argument(
        "--grpc-port",
        type=int,
        help="also serve the Open Inference Protocol over gRPC on this port (default: off)",
    )
    s.add_argument(
        "--host", default="127.0.0.1", help="address to bind, REST and gRPC (default %(default)s)"
    )
    s.add_argument(
        "--enable-repository-api",
        action="store_true",
        help="allow model load/unload over HTTP and gRPC (off: a 403 / PERMISSION_DENIED)",
    )
    s.add_argument("--logger-url", help="send KServe-style payload CloudEvents to this URL")
    s.add_argument(
        "--logger-token-file",
        help="file holding the collector's bearer token (default: the collector_token "
        "setting, $DRIFTLOOP_COLLECTOR_TOKEN[_FILE])",
    )
    s.add_argument("--endpoint", default="default", choices=SERVED_ENDPOINTS)
    s.add_argument(
        "--watch-interval",
        type=float,
        default=2.0,
        help="seconds between alias checks (default %(default)s)",
    )
    s.add_argument("--max-batch-rows", type=int, default=DEFAULT_MAX_BATCH_ROWS)
    s.add_argument(
        "--torch-threads",
        type=threads_arg,
        default=DEFAULT_TORCH_THREADS,
        help="torch intra-op threads (default %(default)s: lowest latency per request)",
    )
    s.add_argument(
        "--shadow-version",
        type=int,
        help="also score requests with this version, after each answer, and log its "
        "predictions as endpoint shadow (default: no shadow)",
    )
    s.add_argument(
        "--shadow-share",
        type=share_arg,
        default=1.0,
        help="fraction of requests the shadow scores (default %(default)s: all)",
    )
    s.set_defaults(func=serve)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from serving.artifacts import load_from_registry
    from serving.model import Predictor
    from serving.payload_log import emitter_for, logger_token
    from serving.server import LocalServer
    from serving.shadow import Shadow
    from serving.watch import AliasWatcher

    torch.set_num_threads(args.torch_threads)
    registry = Registry(open_store(settings))
    name = args.model or _only_model(registry)
    alias = None if args.version else args.alias
    token = logger_token(args.logger_token_file, settings) if args.logger_url else None
    emitter = emitter_for(args.logger_url, name, name, "local", args.endpoint, token)
    shadow = None
    if args.shadow_version is not None:
        ref = VersionRef(name, args.shadow_version)
        shadow = Shadow(
            name, ref.version, lambda: load_from_registry(registry, ref), args.shadow_share
        )
    predictor = Predictor(
        # Resolved on every load: a model loaded again after an unload is the alias's now.
        name,
        lambda: load_from_registry(registry, registry.resolve(name, args.version, alias)),
        args.max_batch_rows,
        emitter,
        shadow,
    )
    predictor.load()
    version = predictor.bundle.version
    watcher = None
    if args.version is None:
        watcher = AliasWatcher(
            registry, name, args.alias, version, predictor.swap, args.watch_interval
        ).start()
    server = LocalServer(
        [predictor],
        port=args.port,
        host=args.host,
        latency_logging=True,
        grpc_port=args.grpc_port,
        repository_api=args.enable_repository_api,
    )
    following = f" (following {args.alias})" if watcher else ""
    if shadow is not None:
        following += (
            f"; shadow v{shadow.version} on {shadow.share:.0%} of requests"
            if shadow.bundle is not None
            else f"; NO shadow: {shadow.error}"
        )
    grpc = f", gRPC on {server.grpc_address}" if server.grpc_address else ""
    print(f"serving {name} v{version} on {server.url}/v1/models/{name}:predict{grpc}{following}")  # noqa: T201
    try:
        server.run()
    finally:
        if watcher:
            watcher.stop()
        if shadow:
            shadow.close()
        if emitter:
            emitter.close()
    return 0


def _only_model(registry: Registry) -> str:
    models = registry.models()
    if len(models) != 1:
        raise ConfigError(f"pass --model: the store holds {models or 'no models'}")
    return models[0]
