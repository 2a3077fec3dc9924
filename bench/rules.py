"""Business rules per request: pandas.eval (what rules used until now) vs compiled.

    .venv/bin/python bench/rules.py [--n 5000] [--rounds 10]

1. Load ``data/bike_rules.yaml`` (2 rules) and 1,000 rows of 2011 bike sharing; decode
   them as the predictor does (numeric: float64 arrays; categorical: lists of str).
2. "pandas_eval": main's evaluation, verbatim: per rule, the columns it names as Series,
   ``pandas.eval(when, engine="python", ...)`` and the indices that fired.
   "compiled": ``RuleSet.evaluate`` on conditions compiled once by ``load_rules``.
   Both must name the same rules on every one of the 1,000 rows (checked first).
3. Time one-row requests, the two sides interleaved in ``--rounds`` rounds so that a slow
   phase of the shared machine hits both; report the median, and the same on a one-row
   DataFrame (what ``bench/serving.py``'s ``rules_ms_per_request`` measures).
4. The costliest file the bounds allow (``MAX_RULE_NODES`` nodes of column-to-column
   string equality) on a 1,000-row request: the per-request budget the design guarantees.

The LAST stdout line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pandas import eval as pandas_eval

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftloop.data import load_window  # noqa: E402
from driftloop.rules import MAX_RULE_NODES, RuleSet, load_rules  # noqa: E402
from driftloop.spec import load_spec  # noqa: E402


def pandas_rules(rules: RuleSet) -> Callable[[dict], list[list[str]]]:
    """driftloop/rules.py before the expression language: pandas.eval on every call."""
    names = {
        r.name: frozenset(
            n.id for n in ast.walk(ast.parse(r.when, mode="eval")) if isinstance(n, ast.Name)
        )
        for r in rules.rules
    }

    def evaluate(columns: dict) -> list[list[str]]:
        n = len(columns) if isinstance(columns, pd.DataFrame) else len(next(iter(columns.values())))
        fired: list[list[str]] = [[] for _ in range(n)]
        for rule in rules.rules:
            used = [c for c in names[rule.name] if c in columns]
            scope = {
                c: v if isinstance(v, pd.Series) else pd.Series(v)
                for c, v in ((c, columns[c]) for c in used)
            }
            out = pandas_eval(
                rule.when, engine="python", resolvers=[scope], local_dict={}, global_dict={}
            )
            truth = np.full(n, bool(out)) if np.isscalar(out) else np.asarray(out)
            for i in np.flatnonzero(truth):
                fired[i].append(rule.name)
        return fired

    return evaluate


def decode(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """The predictor's input (serving.protocol.to_columns): no DataFrame."""
    out: dict = {c: df[c].to_numpy(dtype=np.float64) for c in numeric}
    out |= {c: [None if pd.isna(v) else str(v) for v in df[c]] for c in categorical}
    return out


def median_ms(fns: dict[str, Callable[[], object]], n: int, rounds: int) -> dict[str, float]:
    """Median time per call of each fn, the fns interleaved in ``rounds`` rounds."""
    for fn in fns.values():
        for _ in range(200):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(n // rounds):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return {k: 1000 * float(np.median(ts)) for k, ts in times.items()}


def costliest_file_ms(repeat: int = 20) -> tuple[float, int]:
    """The bound: a file of MAX_RULE_NODES nodes of `a == b` on 1,000 rows (best of)."""
    whens, left = [], MAX_RULE_NODES
    while left >= 4:
        terms = min(60, (left - 1) // 3)
        whens.append(" or ".join(["a == b"] * terms))
        left -= 3 * terms + (terms > 1)
    text = "rules:\n" + "".join(f"  - name: r{i}\n    when: {w!r}\n" for i, w in enumerate(whens))
    rules = load_rules(text, {"a": "categorical", "b": "categorical"})
    cols = {"a": [str(i % 4) for i in range(1000)]}
    cols["b"] = [str(i % 3) if i % 5 else None for i in range(1000)]
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        rules.evaluate(cols)
        best = min(best, time.perf_counter() - t)
    return 1000 * best, sum(p.nodes for p in rules.parsed())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5000, help="one-row requests per side")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()

    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    text = (ROOT / "data" / "bike_rules.yaml").read_text()
    features = dict.fromkeys(spec.numeric, "numeric") | dict.fromkeys(
        spec.categorical, "categorical"
    )
    compiled = load_rules(text, features)
    before = pandas_rules(compiled)
    df = load_window(spec, "2011-01-01", "2012-01-01")[spec.features].head(1000)
    batch = decode(df, spec.numeric, spec.categorical)
    # 1. Same answer on every row, as one batch and row by row.
    assert before(batch) == compiled.evaluate(batch)
    assert sum(map(len, compiled.evaluate(batch))) > 0, "no rule fires: a poor test set"
    for i in range(0, 1000, 97):
        row = {c: v[i : i + 1] for c, v in batch.items()}
        assert before(row) == compiled.evaluate(row)
    # 2. One-row requests: the predictor's decoded columns, then a DataFrame.
    row = {c: v[:1] for c, v in batch.items()}
    frame = df.head(1).reset_index(drop=True)
    ms = median_ms(
        {
            "pandas": lambda: before(row),
            "compiled": lambda: compiled.evaluate(row),
            "pandas_frame": lambda: before(frame),
            "compiled_frame": lambda: compiled.evaluate(frame),
        },
        args.n,
        args.rounds,
    )
    worst_ms, worst_nodes = costliest_file_ms()
    out = {
        "pandas_eval_ms_per_request": round(ms["pandas"], 4),
        "compiled_ms_per_request": round(ms["compiled"], 4),
        "speedup": round(ms["pandas"] / ms["compiled"], 1),
        "pandas_eval_ms_per_request_frame": round(ms["pandas_frame"], 4),
        "compiled_ms_per_request_frame": round(ms["compiled_frame"], 4),
        "rules": len(compiled.rules),
        "requests_per_side": args.n,
        "costliest_file_ms_per_1000_rows": round(worst_ms, 3),
        "costliest_file_nodes": worst_nodes,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
