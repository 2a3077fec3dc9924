"""Config files (dataset specs, drift policies, settings, rules): YAML in, one clear
ConfigError out. Every loader reads and validates through these two functions, so every
bad file is reported the same way: what file, which field, what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from driftloop.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The file's YAML mapping (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{what} {path} does not exist") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping")
    return raw


def field_error(e: ValidationError) -> tuple[tuple[Any, ...], str]:
    """The first error's location and message."""
    first = e.errors()[0]
    return tuple(first["loc"]), str(first["msg"])


def validated(model: type[M], raw: dict[str, Any], what: str) -> M:
    """``model`` from ``raw``; a bad value becomes ``ConfigError("<what>: <field>: <msg>")``."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        loc, msg = field_error(e)
        where = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigError(f"{what}: {where}: {msg}") from e
