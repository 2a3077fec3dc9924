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


def test_serve_grpc_and_repository_flags() -> None:
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert args.grpc_port is None and args.host == "127.0.0.1" and not args.enable_repository_api
    args = build_parser().parse_args(
        ["serve", "--model", "m", "--grpc-port", "8081", "--enable-repository-api"]
    )
    assert args.grpc_port == 8081 and args.enable_repository_api


def test_container_flags() -> None:
    """python -m serving: gRPC on every pod address by default, load/unload off."""
    import argparse

    from kserve.model_server import parser as kserve_parser

    from serving.__main__ import add_arguments

    p = argparse.ArgumentParser(parents=[kserve_parser])
    add_arguments(p)
    args = p.parse_args(["--model_name", "m"])
    assert args.grpc_host == "0.0.0.0" and args.grpc_port == 8081 and args.enable_grpc
    assert args.enable_repository_api is False
    args = p.parse_args(["--enable_repository_api", "true", "--grpc_host", "127.0.0.1"])
    assert args.enable_repository_api is True and args.grpc_host == "127.0.0.1"


def test_logger_token_comes_from_the_flag_file_or_the_setting(tmp_path, monkeypatch) -> None:
    import pytest

    from driftloop.errors import ConfigError
    from driftloop.settings import load_settings
    from serving.payload_log import logger_token

    monkeypatch.delenv("DRIFTLOOP_COLLECTOR_TOKEN_FILE", raising=False)
    monkeypatch.setenv("DRIFTLOOP_COLLECTOR_TOKEN", "from-setting")
    settings = load_settings()
    token = tmp_path / "token"
    token.write_text("from-file\n")
    args = build_parser().parse_args(
        ["serve", "--logger-url", "http://c/", "--logger-token-file", str(token)]
    )
    assert logger_token(args.logger_token_file, settings) == "from-file"
    assert logger_token(None, settings) == "from-setting"
    with pytest.raises(ConfigError, match="cannot read the token file"):
        logger_token(str(tmp_path / "missing"), settings)


def _help(main, argv: list[str], capsys) -> str:
    import contextlib

    with contextlib.suppress(SystemExit):
        main(argv)
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_every_servers_help_states_where_it_binds(capsys) -> None:
    from driftloop.cli import main as driftloop
    from monitoring.collector import main as collector
    from serving.__main__ import main as container

    serve = _help(driftloop, ["serve", "--help"], capsys)
    assert "--host HOST address to bind, REST and gRPC (default 127.0.0.1)" in serve
    assert "REST port (default 8080)" in serve
    pod = _help(container, ["--help"], capsys)
    assert "Binds: REST on every address (0.0.0.0) at --http_port (default 8080)" in pod
    assert "gRPC on --grpc_host at --grpc_port (default 0.0.0.0:8081)" in pod
    for text in (
        _help(collector, ["--help"], capsys),
        _help(driftloop, ["collector", "-h"], capsys),
    ):
        assert "--port PORT HTTP port (default 8080)" in text
        assert "--host HOST address to bind (default 127.0.0.1: this machine only" in text


def test_shadow_flags_parse_and_refuse_a_share_outside_0_1(capsys) -> None:
    import argparse
    import contextlib

    from kserve.model_server import parser as kserve_parser

    from serving.__main__ import add_arguments

    args = build_parser().parse_args(["serve", "--model", "m"])
    assert args.shadow_version is None and args.shadow_share == 1.0
    args = build_parser().parse_args(
        ["serve", "--model", "m", "--shadow-version", "3", "--shadow-share", "0.25"]
    )
    assert args.shadow_version == 3 and args.shadow_share == 0.25
    p = argparse.ArgumentParser(parents=[kserve_parser])
    add_arguments(p)
    args = p.parse_args(["--model_name", "m", "--shadow_version", "4", "--shadow_share", "0"])
    assert args.shadow_version == 4 and args.shadow_share == 0.0
    with contextlib.suppress(SystemExit):
        p.parse_args(["--model_name", "m", "--shadow_share", "1.5"])
    assert "expected a fraction in [0, 1], got '1.5'" in capsys.readouterr().err
    with contextlib.suppress(SystemExit):
        build_parser().parse_args(["serve", "--endpoint", "shadow"])  # a server is never one
    assert "invalid choice: 'shadow'" in capsys.readouterr().err
