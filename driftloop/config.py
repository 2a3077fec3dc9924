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
        raw = load_yaml(path.read_bytes(), f"{what} {path}")
    except FileNotFoundError as e:
        raise ConfigError(f"{what} {path} does not exist") from e
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping")
    return raw


# A config file is a few KB; one of megabytes, or nested hundreds deep, is a mistake or an
# attack (PyYAML's composer recurses per level).
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 50


def load_yaml(data: bytes | str, what: str) -> Any:
    """Safe YAML (no tags that construct objects), UTF-8, bounded in size and depth."""
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} is larger than {MAX_YAML_BYTES} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} is not UTF-8 text: {e}") from e
    depth = _depth(text)
    if depth > MAX_YAML_DEPTH:
        raise ConfigError(f"{what} nests {depth} levels deep (at most {MAX_YAML_DEPTH})")
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what} is not valid YAML: {e.problem or e.context}{where}") from e
    except (yaml.YAMLError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{what} is not valid YAML: {first}") from e


def _depth(text: str) -> int:
    """An upper bound on flow-style nesting ([, {) plus block indentation levels."""
    flow = deepest = 0
    for ch in text:
        if ch in "[{":
            flow += 1
            deepest = max(deepest, flow)
        elif ch in "]}":
            flow = max(0, flow - 1)
    indents = {len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.strip()}
    return deepest + len(indents)


def field_error(e: ValidationError, *, show_input: bool = True) -> tuple[tuple[Any, ...], str]:
    """The first error's location and message, which says what was found as well as what
    was expected: pydantic's messages ("Input should be 'binary' or ...") name only the
    latter, so a scalar input is appended ("(got 'Binary')"). ``show_input`` False for
    values that may be secrets (settings)."""
    first = e.errors()[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    value = first.get("input")
    if show_input and first["type"] != "value_error" and isinstance(value, str | int | float):
        msg = f"{msg} (got {value!r})"
    return tuple(first["loc"]), msg


def validated(model: type[M], raw: dict[str, Any], what: str) -> M:
    """``model`` from ``raw``; a bad value becomes ``ConfigError("<what>: <field>: <msg>")``."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        loc, msg = field_error(e)
        where = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigError(f"{what}: {where}: {msg}") from e
