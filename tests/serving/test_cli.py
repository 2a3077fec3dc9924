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
