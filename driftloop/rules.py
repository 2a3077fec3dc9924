"""Business rules: declarative flags evaluated next to the model, per request.

A dataset spec may name a rules file (``rules: bike_rules.yaml``); the registry ships it
in every version directory as ``rules.yaml`` and the predictor loads it from there::

    rules:
      - name: storm_peak
        when: "weathersit in ['3', '4'] and hr in ['17', '18']"
        action: flag

``when`` is a pandas ``eval`` expression over the request's feature columns (categorical
columns are strings, numeric columns floats), so there is no hand-written parser; only the
feature columns are in scope. A row "fires" a rule when the expression is true for it.
The response and the payload log carry, per row, the names of the rules that fired.

Cost: pandas parses the expression on every call (it has no compile-once API), so a
rule costs ~0.1-0.4 ms per request (``bench/serving.py`` reports it). Evaluation passes
``pd.eval`` only the columns the rule names, not a DataFrame of every feature, which
would cost 2-3x more.

Check a file by hand::

    python -c "from driftloop.rules import load_rules; print(load_rules(open('r.yaml').read()))"
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftloop.config import field_error
from driftloop.errors import ConfigError
from driftloop.preprocess import Columns


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The name is what responses and logs report: keep it short and stable.
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    when: str = Field(min_length=1)
    # Only "flag" for now: rules annotate predictions, they never change them.
    action: Literal["flag"] = "flag"


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = []

    def evaluate(self, columns: Columns) -> list[list[str]]:
        """Per row, the names of the rules whose ``when`` is true. ``columns``: a DataFrame
        or a mapping of every feature to its values (what the predictor decodes)."""
        n = len(next(iter(columns.values()))) if isinstance(columns, Mapping) else len(columns)
        fired: list[list[str]] = [[] for _ in range(n)]
        for rule in self.rules:
            for i in np.flatnonzero(_truth(columns, rule, n)):
                fired[i].append(rule.name)
        return fired


def _truth(columns: Columns, rule: Rule, n: int) -> np.ndarray:
    names = _referenced(rule.when)
    # Names that are not columns (pandas' math functions such as abs) stay for pd.eval.
    used = [c for c in names if c in columns] if names is not None else list(columns)
    scope = {c: _series(columns[c]) for c in used}
    # engine="python": no numexpr dependency, and string comparisons work. Empty local and
    # global dicts: a name that is not a feature is an error, never one of our variables.
    out = pd.eval(rule.when, engine="python", resolvers=[scope], local_dict={}, global_dict={})
    if np.isscalar(out):
        return np.full(n, bool(out))
    values = np.asarray(out)
    if values.dtype != bool:
        raise ConfigError(
            f"rule {rule.name!r}: `when` must be a condition (true/false), "
            f"not a {values.dtype} expression: {rule.when!r}"
        )
    return values


@functools.cache
def _referenced(when: str) -> frozenset[str] | None:
    """The names an expression uses; None if Python cannot parse it (pandas' backtick
    quoting), and then every column is passed."""
    try:
        tree = ast.parse(when, mode="eval")
    except SyntaxError:
        return None
    return frozenset(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))


def _series(values: Any) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values)


def load_rules(text: str, features: dict[str, str] | None = None) -> RuleSet:
    """Parse and validate a rules file; any problem is one ConfigError naming the rule.

    ``features`` (name -> "numeric" | "categorical") lets every expression be tried on a
    sample row, so a typo in a column name fails at load time, not on the first request.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"rules file is not valid YAML: {e}") from e
    if raw is None:
        return RuleSet()
    if not isinstance(raw, dict):
        raise ConfigError("rules file must be a mapping with a `rules:` list")
    try:
        rules = RuleSet.model_validate(raw)
    except ValidationError as e:
        loc, msg = field_error(e)
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            items = raw.get("rules") or []
            item = items[loc[1]] if loc[1] < len(items) else None
            name = item.get("name") if isinstance(item, dict) else None
            where = f"rule {name or '#' + str(loc[1] + 1)!r}: " + ".".join(str(p) for p in loc[2:])
        raise ConfigError(f"rules file: {where}: {msg}") from e
    names = [r.name for r in rules.rules]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"rules file: rule {dupes[0]!r} is defined more than once")
    if features is not None:
        sample = sample_frame(features)
        for rule in rules.rules:
            try:
                _truth(sample, rule, len(sample))
            except ConfigError:
                raise
            except Exception as e:  # pandas raises many types for a bad expression
                raise ConfigError(
                    f"rule {rule.name!r}: cannot evaluate `when` "
                    f"{rule.when!r}: {type(e).__name__}: {e}"
                ) from e
    return rules


def sample_frame(features: dict[str, str]) -> pd.DataFrame:
    """One typed row (numeric 0.0, categorical "") to dry-run expressions on."""
    return pd.DataFrame(
        {
            c: pd.Series(
                [0.0] if kind == "numeric" else [""],
                dtype="float64" if kind == "numeric" else object,
            )
            for c, kind in features.items()
        }
    )
