"""`driftloop serve` is wired into the CLI."""

from __future__ import annotations

from driftloop.cli import build_parser
from serving.cli import serve


def test_serve_command_parses() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--model",
            "bike-sharing",
            "--version",
            "2",
            "--port",
            "9000",
            "--logger-url",
            "http://127.0.0.1:1/",
        ]
    )
    assert args.func is serve and args.version == 2 and args.port == 9000
    assert args.logger_url == "http://127.0.0.1:1/" and args.watch_interval == 2.0
