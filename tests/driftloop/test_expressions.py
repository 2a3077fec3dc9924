"""The expression language: the same truth as pandas.eval on legitimate expressions,
everything else refused when compiling, bounded, and nothing ever executed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.errors import ConfigError, DataError
from driftloop.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIST,
    MAX_NODES,
    compile_expression,
    evaluate_all,
    parse,
)

KINDS = {
    "temp": "numeric",
    "atemp": "numeric",
    "hr": "categorical",
    "weathersit": "categorical",
}
CATEGORIES = ["1", "2", "3", "4", "17", "18"]

# Legitimate expressions: the rules of data/bike_rules.yaml and tests/serving/test_rules.py,
# then arithmetic, comparison, membership and boolean mixes pandas.eval also accepts.
CORPUS = [
    "weathersit in ['3', '4'] and hr in ['17', '18']",
    "temp < 0.1",
    "abs(temp - 0.3) > 0.22",
    "temp > 0.5 or atemp <= 0.2",
    "not (temp > 0.5)",
    "temp != 0.5",
    "temp == atemp",
    "temp != atemp",
    "hr == '17'",
    "hr != '17'",
    "hr == weathersit",
    "hr != weathersit",
    "hr not in ['17', '18']",
    "hr in ('1', '2')",
    "temp in [0.25, 0.5, 1]",
    "temp not in [0.25, 0.5]",
    "0.1 < temp < 0.6",
    "0.1 < temp <= atemp",
    "temp * 2 + atemp / 3 > 0.5",
    "temp ** 2 - atemp >= 0",
    "temp // 0.25 == 1",
    "temp % 0.25 < 0.1",
    "-temp < -0.3",
    "+temp >= 0",
    "temp / 0 > 1",
    "temp / atemp < 1",
    "sqrt(temp) > 0.5",
    "log1p(temp) < 0.2",
    "exp(temp) > 1.5",
    "log(temp) < -1",
    "(temp > 0.5) and not (hr in ['17']) or weathersit == '3'",
    "temp > 0.2 and (hr == '17' or hr == '18') and not weathersit in ['4']",
    "temp < 0.1 or temp > 0.9 or atemp == 0",
]

NUMBERS = st.one_of(
    st.sampled_from([np.nan, 0.0, 0.1, 0.25, 0.5, 1.0, -0.5, np.inf, -np.inf]),
    st.floats(-2, 2, allow_nan=False),
)
STRINGS = st.one_of(st.sampled_from(CATEGORIES), st.none())


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 12))
    cols = {
        name: draw(st.lists(NUMBERS if kind == "numeric" else STRINGS, min_size=n, max_size=n))
        for name, kind in KINDS.items()
    }
    return pd.DataFrame(
        {
            k: pd.Series(v, dtype="float64" if KINDS[k] == "numeric" else object)
            for k, v in cols.items()
        }
    )


def pandas_truth(expr: str, df: pd.DataFrame) -> np.ndarray:
    """What rules computed until now: pandas.eval, python engine, columns as resolvers."""
    scope = {c: df[c] for c in df.columns}
    with np.errstate(all="ignore"):
        out = pd.eval(expr, engine="python", resolvers=[scope], local_dict={}, global_dict={})
    return np.full(len(df), bool(out)) if np.isscalar(out) else np.asarray(out, dtype=bool)


@pytest.mark.parametrize("expr", CORPUS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=frames())
def test_same_truth_as_pandas_eval_row_by_row(expr: str, df: pd.DataFrame) -> None:
    compiled = compile_expression(expr, KINDS, "bool")
    expected = pandas_truth(expr, df)
    np.testing.assert_array_equal(compiled.evaluate(df), expected)
    # The predictor's input: decoded columns (float64 arrays, lists of str / None).
    decoded = {c: df[c].to_numpy() if KINDS[c] == "numeric" else df[c].tolist() for c in df.columns}
    np.testing.assert_array_equal(compiled.evaluate(decoded), expected)


def test_missing_values_compare_false_and_their_negations_true() -> None:
    cols = {"temp": np.array([np.nan, 0.5]), "atemp": [0.0, 0.0], "hr": [None, "17"]}
    cols["weathersit"] = [None, "3"]

    def truth(expr: str) -> list[bool]:
        return compile_expression(expr, KINDS, "bool").evaluate(cols).tolist()

    for expr in ("temp < 1", "temp >= 0.5", "temp == 0.5", "temp in [0.5]", "0 < temp < 1"):
        assert truth(expr) == [False, True], expr  # row 0: temp is missing
    assert truth("temp != 0.5") == [True, False] and truth("temp not in [0.5]") == [True, False]
    assert truth("hr == '17'") == [False, True] and truth("hr != '17'") == [True, False]
    assert truth("hr in ['17']") == [False, True] and truth("hr not in ['17']") == [True, False]
    assert truth("hr == weathersit") == [False, False]  # None equals nothing, not even None
    assert truth("isnull(temp) and isnull(hr)") == [True, False]
    assert truth("notnull(temp) and notnull(hr)") == [False, True]


def test_numeric_and_string_results() -> None:
    cols = {"temp": np.array([0.5, -1.0, np.nan]), "atemp": np.array([2.0, 0.0, 1.0])}
    cols |= {"hr": ["17", "3", None], "weathersit": ["1", "1", "1"]}

    def number(expr: str) -> np.ndarray:
        out = compile_expression(expr, KINDS, "number").evaluate(cols)
        assert out.dtype == np.float64
        return out

    np.testing.assert_allclose(number("temp / atemp"), [0.25, -np.inf, np.nan])
    np.testing.assert_allclose(number("clip(temp, 0, 0.4)"), [0.4, 0.0, np.nan])
    np.testing.assert_allclose(number("log(atemp)"), [np.log(2), -np.inf, 0.0])
    np.testing.assert_allclose(
        number("minimum(temp, atemp) + maximum(temp, atemp)"), [2.5, -1, np.nan]
    )
    np.testing.assert_allclose(number("round(temp * 3.14159, 2)"), [1.57, -3.14, np.nan])
    np.testing.assert_allclose(number("floor(atemp / 2) + ceil(temp)"), [2.0, -1.0, np.nan])
    np.testing.assert_allclose(number("where(temp > 0, temp, 0)"), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(number("1 if hr in ['17'] else 0"), [1, 0, 0])
    np.testing.assert_allclose(number("3"), [3, 3, 3])  # a constant: one value per row
    bucket = compile_expression("'warm' if temp > 0 else 'cold'", KINDS, "string").evaluate(cols)
    assert bucket.tolist() == ["warm", "cold", "cold"]


def test_float64_arithmetic_is_instant_and_never_raises() -> None:
    cols = {"temp": np.array([0.5, 1e308])}
    big = compile_expression("temp > 9 ** 9 ** 9", KINDS, "bool")  # inf, folded when compiling
    assert big.evaluate(cols).tolist() == [False, False]
    inf = compile_expression("temp * 10 > 1e15 and temp ** temp > 0", KINDS, "bool")
    assert inf.evaluate(cols).tolist() == [False, True]


def test_backticks_quote_columns_that_are_not_identifiers() -> None:
    kinds = {"nr.employed": "numeric", "if": "categorical"}
    e = compile_expression("`nr.employed` > 5000 and `if` == 'a`b'", kinds, "bool")
    assert e.kinds == kinds
    assert e.evaluate({"nr.employed": [5100.0, 4000.0], "if": ["a`b", "a`b"]}).tolist() == [
        True,
        False,
    ]
    with pytest.raises(ConfigError, match=r"unknown column 'nr\.x'.*`nr\.x`.*character 11"):
        compile_expression("1 > 0 and `nr.x` > 1", kinds, "bool")


def test_dataframes_with_pandas_dtypes_and_mappings_agree() -> None:
    df = pd.DataFrame(
        {
            "temp": pd.array([0.5, None], dtype="Float64"),
            "atemp": [1.0, 2.0],
            "hr": pd.array(["17", None], dtype="string"),
            "weathersit": ["3", "3"],
        }
    )
    e = compile_expression("temp > 0.1 or hr == '17' or isnull(hr)", KINDS, "bool")
    assert e.evaluate(df).tolist() == [True, True]
    assert compile_expression("temp != 1", KINDS, "bool").evaluate(df).tolist() == [True, True]
    a, b = evaluate_all(
        [
            compile_expression("hr in ['17']", KINDS, "bool"),
            compile_expression("atemp * 2", KINDS, "number"),
        ],
        df,
    )
    assert a.tolist() == [True, False] and b.tolist() == [2.0, 4.0]
    with pytest.raises(DataError, match="no column 'temp'"):
        e.evaluate({"hr": ["1"]})


HOSTILE = [
    # The security review's payload: on pandas.eval it ran a shell command.
    (
        "hr.__init__.__globals__.get('__builtins__').get('__import__').__self__"
        ".__import__('os').system('touch {canary}') == 0",
        "attribute access is not allowed: `hr.__init__`",
    ),
    ("hr.__class__.__mro__[-1].__subclasses__() == 0", "attribute access is not allowed"),
    ("temp.__globals__ == 1", "attribute access is not allowed: `temp.__globals__`"),
    ("open('{canary}', 'w').write('x') == 1", "function open() is not allowed"),
    ("eval(\"open('{canary}', 'w')\") == 1", "function eval() is not allowed"),
    ("exec('import os') == 1", "function exec() is not allowed"),
    ("getattr(hr, 'x') == 1", "function getattr() is not allowed"),
    ("__import__('os').system('touch {canary}') == 0", "function __import__() is not allowed"),
    ("hr[0] == '1'", "subscripts are not allowed"),
    ("(lambda: 1)() == 1", "lambdas are not allowed"),
    ("abs(1)(2) == 1", "calling anything but a function by name is not allowed"),
    ("[x for x in hr] == 1", "comprehensions are not allowed"),
    ("any(x for x in hr)", "function any() is not allowed"),
    ("abs(x=temp) > 1", "keyword arguments are not allowed"),
    ("abs(*temp) > 1", "starred arguments are not allowed"),
    ("f'{{hr}}' == 'x'", "f-strings are not allowed"),
    ("(x := 1) == 1", "assignments are not allowed"),
    ("{{1: 2}} == 1", "dicts are not allowed"),
    ("temp > 1 & temp < 2", "operator & (use `and`) is not allowed"),
    ("~(temp > 1)", "operator ~ is not allowed"),
    ("hr is None", "`is` is not allowed"),
    ("pd > 1 or np > 1", "unknown column 'pd'"),
    ("__builtins__ == 1", "unknown column '__builtins__'"),
    ("temp + 1", "must be a condition (true/false), not a number"),
    ("hr < '17'", "`<` compares numbers, not a string"),
    ("temp == '1'", "cannot compare a number with a string"),
    ("not temp", "`not` needs a condition"),
    ("temp + hr > 1", "`+` needs a number, not a string"),
    ("hr in [1, 2]", "the list must hold only strings"),
    ("temp in atemp", "`in` needs a literal list"),
    ("hr in [weathersit]", "list items must be number or string literals"),
    ("[1, 2] == 1", "a list is only allowed on the right of `in`"),
    ("temp > 1)", "not a valid expression"),
    ("log(temp, 2) > 1", "log() takes 1 argument"),
    ("temp > b'x'", "bytes literals are not allowed"),
    ("temp > 1j", "complex literals are not allowed"),
]


@pytest.mark.parametrize("text,message", HOSTILE)
def test_outside_the_grammar_is_refused_when_compiling(text, message, tmp_path) -> None:
    canary = tmp_path / "canary"
    with pytest.raises(ConfigError) as e:
        compile_expression(text.format(canary=canary), KINDS, "bool", where="rule 'x'")
    assert str(e.value).startswith("rule 'x': ") and message in str(e.value)
    assert "\n" not in str(e.value)
    assert not canary.exists()


def test_errors_say_where() -> None:
    with pytest.raises(ConfigError, match=r"`hr\.x` \(at character 14\)"):
        compile_expression("temp > 1 and hr.x == 1", KINDS, "bool")
    with pytest.raises(ConfigError, match=r"unknown column 'tmp'.*\(at character 3\)"):
        compile_expression("  tmp > 1", KINDS, "bool")


@pytest.mark.parametrize(
    "text,message",
    [
        ("(" * 500 + "temp" + ")" * 500 + " > 1", f"too long: 1008 > {MAX_LENGTH}"),
        ("(" * 300 + "temp" + ")" * 300 + " > 1", "too many nested parentheses"),
        ("temp in [" + ", ".join(["1"] * 10**6) + "]", "too long"),
        (
            "temp in [" + ",".join(["1"] * (MAX_LIST + 1)) + "]",
            f"list is too long: 101 > {MAX_LIST}",
        ),
        ("temp > 1" + " or temp > 1" * 70, f"too large: 214 > {MAX_NODES} nodes"),
        ("-" * 40 + "temp > 1", f"nested too deeply (more than {MAX_DEPTH} levels)"),
        ("abs(" * 40 + "temp" + ")" * 40 + " > 1", "nested too deeply"),
        ("temp > 1" + "0" * 400, "number out of range"),
        ("temp > 1e400", "number out of range"),
        ("temp > 0x" + "f" * 100, "number out of range"),
        ("hr == '" + "x" * 300 + "'", "string is too long: 300 > 200"),
        ("temp > 1 and " * 100 + "temp > 1", "too long"),
    ],
)
def test_bounds_are_refused_when_compiling(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        compile_expression(text, KINDS, "bool")
    assert message in str(e.value)
    assert len(str(e.value)) < 400  # one line, not the whole expression back


def test_parse_knows_no_columns_but_refuses_the_grammar() -> None:
    p = parse("`nr.employed` > 1 and hr in ['1'] and abs(temp) < 2")
    assert p.names == ("nr.employed", "hr", "temp") and p.nodes == 12
    with pytest.raises(ConfigError, match="attribute access"):
        parse("x.y > 1")
