"""Business rules: declarative flags evaluated next to the model, per request.

A dataset spec may name a rules file (``rules: bike_rules.yaml``); the registry ships it
in every version directory as ``rules.yaml`` and the predictor loads it from there::

    rules:
      - name: storm_peak
        when: "weathersit in ['3', '4'] and hr in ['17', '18']"
        action: flag

``when`` is a condition in driftloop's expression language (``driftloop/expressions.py``:
columns, literals, arithmetic, comparisons, ``in [...]``, and/or/not, a few numpy
functions; no attribute access, no other calls, nothing in scope but the features). A row
"fires" a rule when its condition is true for it; the response and the payload log carry,
per row, the names of the rules that fired.

Checked before anything runs, in one place (``check_version_rules``): when a version is
registered (``steps.register``), promoted (``Registry.verify``) and loaded by the
predictor (``serving/artifacts.py``), every ``when`` is compiled against the version's
input schema; a construct outside the language, an unknown column or a condition that is
not true/false is one ConfigError naming the rule.

Cost. Each ``when`` is compiled once, at load; a request then costs a few numpy calls
per rule over its columns (bike's 2 rules on one row: ~0.02 ms, ``bench/rules.py``). The
cost per request is bounded by design, not by a timer: a file holds at most ``MAX_RULES``
rules and ``MAX_RULE_NODES`` syntax nodes, the language has no loops, no calls but numpy
functions and no way to build data, and each node is a vectorised call (or one set lookup
per row) linear in the rows, so a request costs at most ~``MAX_RULE_NODES`` such calls
over at most ``max_batch_rows`` rows. The costliest file these bounds allow takes a few
milliseconds on 1,000 rows (``bench/rules.py`` reports it; a test holds it under 1 s).

Check a file by hand::

    python -c "from driftloop.rules import load_rules; print(load_rules(open('r.yaml').read()))"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from driftloop.config import field_error
from driftloop.errors import ConfigError
from driftloop.expressions import Expression, Parsed, compile_expression, evaluate_all, parse
from driftloop.formats import InputSchema
from driftloop.preprocess import Columns

# A rules file is a handful of one-line conditions; these bound what a hostile one costs.
MAX_RULES = 100
MAX_RULE_NODES = 500  # syntax nodes over all rules of a file (each rule: <= MAX_NODES)
MAX_RULES_BYTES = 64 * 1024


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The name is what responses and logs report: keep it short and stable.
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    when: str = Field(min_length=1)
    # Only "flag" for now: rules annotate predictions, they never change them.
    action: Literal["flag"] = "flag"


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(default=[], max_length=MAX_RULES)
    # Compiled once: against the schema's kinds by load_rules(text, features); without
    # features, against the kinds of the first columns it is evaluated on (per kinds).
    _parsed: list[Parsed] | None = PrivateAttr(default=None)
    _loaded: list[Expression] | None = PrivateAttr(default=None)
    _compiled: dict[tuple, list[Expression]] = PrivateAttr(default_factory=dict)

    def evaluate(self, columns: Columns) -> list[list[str]]:
        """Per row, the names of the rules whose ``when`` is true. ``columns``: a DataFrame
        or a mapping of every feature to its values (what the predictor decodes)."""
        n = (
            len(columns)
            if isinstance(columns, pd.DataFrame)
            else len(next(iter(columns.values()), ()))
        )
        fired: list[list[str]] = [[] for _ in range(n)]
        if not self.rules:
            return fired
        compiled = self._loaded if self._loaded is not None else self._infer(columns)
        for rule, truth in zip(self.rules, evaluate_all(compiled, columns, n), strict=True):
            for i in np.flatnonzero(truth):
                fired[i].append(rule.name)
        return fired

    def compile(self, kinds: Mapping[str, str]) -> list[Expression]:
        """Every rule's condition compiled against these column kinds (cached)."""
        key = tuple(sorted(kinds.items()))
        if (compiled := self._compiled.get(key)) is None:
            compiled = [compile_expression(p, kinds, "bool") for p in self.parsed()]
            self._compiled[key] = compiled
        return compiled

    def parsed(self) -> list[Parsed]:
        """Every rule's condition checked against the language and the bounds (cached)."""
        if self._parsed is None:
            self._parsed = [parse(r.when, where=f"rule {r.name!r}") for r in self.rules]
            if (nodes := sum(p.nodes for p in self._parsed)) > MAX_RULE_NODES:
                raise ConfigError(
                    f"rules file is too large: {nodes} > {MAX_RULE_NODES} expression nodes "
                    "in all; split it or simplify its rules"
                )
        return self._parsed

    def _infer(self, columns: Columns) -> list[Expression]:
        names = {n for p in self.parsed() for n in p.names}
        return self.compile({n: _kind_of(columns[n]) for n in names if n in columns})


def _kind_of(values: Any) -> str:
    """A column's kind from its values, for rules loaded without features: a numeric dtype,
    or only numbers and missing values, is numeric; anything else categorical."""
    if isinstance(values, pd.Series | np.ndarray) and values.dtype != object:
        return "numeric" if values.dtype.kind in "fiub" else "categorical"
    present = [v for v in values if v is not None and v == v]  # NaN != NaN
    number = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    return "numeric" if present and number else "categorical"


def load_rules(text: str, features: dict[str, str] | None = None) -> RuleSet:
    """Parse and validate a rules file; any problem is one ConfigError naming the rule.

    ``features`` (name -> "numeric" | "categorical", the schema's kinds) compiles every
    condition at load: an unknown column or a condition that is not true/false fails here,
    not on the first request. Without it, the language and the bounds are still checked at
    load, and the conditions compiled on first use against the kinds of the columns given
    (numbers: numeric; anything else: categorical).
    """
    if len(text) > MAX_RULES_BYTES:
        raise ConfigError(f"rules file is too large: {len(text)} > {MAX_RULES_BYTES} bytes")
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
    rules.parsed()  # the language and the bounds, with or without features
    if features is not None:
        rules._loaded = rules.compile(features)
    return rules


def check_version_rules(text: bytes | str, schema: InputSchema, where: str) -> RuleSet:
    """A version's ``rules.yaml`` compiled against its ``schema.json``: what registration,
    promotion and the predictor all check. ``where`` names the file in the error."""
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
        return load_rules(decoded, schema.kinds)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text: {e}") from e
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
