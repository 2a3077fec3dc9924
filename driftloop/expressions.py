"""Row-wise expressions over named columns: a small language that is data, not code.

Business rules (``driftloop/rules.py``) and derived features are expressions over the
columns of a row. Compile one once, then evaluate it on whole columns::

    from driftloop.expressions import compile_expression
    e = compile_expression("temp < 0.1 or hr in ['17', '18']",
                           {"temp": "numeric", "hr": "categorical"}, result="bool")
    e.evaluate({"temp": np.array([0.05, 0.5]), "hr": ["2", "3"]})  # array([ True, False])

The grammar is Python expression syntax, parsed by ``ast`` in ``mode="eval"``, of which
only this is accepted (anything else is one ConfigError naming the construct and where):

- names are input columns; nothing else is ever in scope. Quote a column whose name is not
  an identifier with backticks, as in pandas: ```nr.employed` > 5000``;
- literals: numbers, strings, True/False; a list or tuple of number or string literals,
  only on the right of ``in`` / ``not in``;
- arithmetic ``+ - * / // % **`` and unary ``- +``, on numbers;
- comparisons, chained too (``0 < x <= 1``): ``< <= > >=`` between numbers, ``== !=``
  between two values of one type, ``in`` / ``not in`` a literal list;
- ``and``, ``or``, ``not`` on conditions; ``a if cond else b`` (``np.where``);
- calls, positional only, to ``FUNCTIONS``: abs, ceil, exp, floor, log, log1p, sqrt,
  round(x[, digits]), clip(x, lo, hi), minimum(a, b), maximum(a, b), where(cond, a, b),
  isnull(x), notnull(x).

Types are checked when compiling: numeric columns are numbers (float64, NaN = missing),
categorical columns strings (None = missing); comparisons and and/or/not are conditions.
The caller says which result it needs: "bool", "number" or "string".

Semantics. Arithmetic is float64 under IEEE 754 and never raises: ``9 ** 9 ** 9`` is inf
(constant parts are computed once, when compiling), ``x / 0`` is ±inf, ``log(-1)`` NaN.
Missing values: arithmetic propagates NaN; a comparison (``< <= > >= ==``, ``in``) with a
missing operand is False and its negation (``!=``, ``not in``) True, as in pandas and
IEEE 754, so ``x != 1`` is always ``not (x == 1)``. Test for missing with ``isnull(x)``.

Bounds, refused when compiling: ``MAX_LENGTH`` characters, ``MAX_NODES`` syntax nodes,
``MAX_DEPTH`` levels of nesting, ``MAX_LIST`` items per list, ``MAX_STRING`` characters
per string, numbers finite and at most ``MAX_NUMBER`` in magnitude. There are no loops,
no user functions and no way to build data: each node is one numpy call (or one set
lookup per row) linear in the rows, so evaluating costs at most ``MAX_NODES`` vectorised
calls over the columns.

Why hand-written, not ``pandas.eval`` (what rules used until now): pandas' python engine
evaluates attribute access and calls (a rule could reach ``__globals__`` and run a shell
command) and computes Python integers exactly (``9 ** 9 ** 9`` stalls the process);
numexpr, its other engine, has no strings or membership; and pandas parses the text on
every call, 0.1-0.4 ms per rule, where this compiles once. ``tests/driftloop/
test_expressions.py`` checks the results against ``pandas.eval``, row by row.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import pandas as pd

from driftloop.errors import ConfigError, DataError

Result = Literal["bool", "number", "string"]
Env = dict[str, np.ndarray]
Columns: TypeAlias = pd.DataFrame | Mapping[str, Any]  # as driftloop.preprocess.Columns

# Rules and features are one-liners: these are far above any real one, and keep a hostile
# expression to a few hundred numpy calls.
MAX_LENGTH = 1_000  # characters of text
MAX_NODES = 200  # syntax nodes: names, literals (list items too), operations, calls
MAX_DEPTH = 32  # nesting of nodes (a + b + c nests one level per +)
MAX_LIST = 100  # items of one `in [...]` list
MAX_STRING = 200  # characters of one string literal
MAX_NUMBER = 1e15  # magnitude of a number literal (float64 is exact for integers < 2**53)

_TYPE_OF_KIND = {"numeric": "number", "categorical": "string"}
_DTYPE = {"bool": np.dtype(bool), "number": np.dtype(np.float64), "string": np.dtype(object)}
_WHAT = {"bool": "a condition (true/false)", "number": "a number", "string": "a string"}
_ARITHMETIC: dict[type, tuple[Callable, str]] = {
    ast.Add: (np.add, "+"),
    ast.Sub: (np.subtract, "-"),
    ast.Mult: (np.multiply, "*"),
    ast.Div: (np.true_divide, "/"),
    ast.FloorDiv: (np.floor_divide, "//"),
    ast.Mod: (np.remainder, "%"),
    ast.Pow: (np.power, "**"),
}
_ORDER: dict[type, tuple[Callable, str]] = {
    ast.Lt: (operator.lt, "<"),
    ast.LtE: (operator.le, "<="),
    ast.Gt: (operator.gt, ">"),
    ast.GtE: (operator.ge, ">="),
}
_NUMERIC: dict[str, tuple[int, Callable]] = {
    **{f: (1, getattr(np, f)) for f in ("abs", "ceil", "exp", "floor", "log", "log1p", "sqrt")},
    "clip": (3, np.clip),
    "minimum": (2, np.minimum),
    "maximum": (2, np.maximum),
}
_ARITY = {name: arity for name, (arity, _) in _NUMERIC.items()}
_ARITY |= {"round": 1, "where": 3, "isnull": 1, "notnull": 1}
FUNCTIONS = frozenset(_ARITY)
_FUNCTION_LIST = ", ".join(sorted(FUNCTIONS))
_ALLOWED = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call, ast.Name)
_ALLOWED_TOO = (ast.Constant, ast.List, ast.Tuple)
_REFUSED: dict[type, str] = {ast.Attribute: "attribute access is", ast.Lambda: "lambdas are"}
_REFUSED |= {ast.Subscript: "subscripts are", ast.JoinedStr: "f-strings are"}
_REFUSED |= {ast.NamedExpr: "assignments are", ast.Dict: "dicts are", ast.Set: "sets are"}
_REFUSED |= {ast.Starred: "starred arguments are", ast.keyword: "keyword arguments are"}
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_REFUSED |= dict.fromkeys(_COMPREHENSIONS, "comprehensions are")
_OPERATORS = {ast.BitAnd: "& (use `and`)", ast.BitOr: "| (use `or`)", ast.BitXor: "^"}
_OPERATORS |= {ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@"}


@dataclass(frozen=True, eq=False)
class Parsed:
    """An expression that passed the grammar and the bounds; its columns not yet known."""

    text: str
    where: str  # what its errors say first, e.g. "rule 'storm_peak'"
    names: tuple[str, ...]  # the names it reads (its columns), in order of first use
    nodes: int
    tree: ast.expr = field(repr=False)
    code: str = field(repr=False)  # what was parsed: backtick names as placeholders
    lead: int = field(repr=False)  # leading blanks stripped from ``text``
    quoted: dict[str, str] = field(repr=False)  # placeholder -> column name

    def fail(self, node: ast.AST, problem: str) -> ConfigError:
        """One error naming ``problem``, the offending text and its position in ``text``."""
        snippet = ast.get_source_segment(self.code, node) or ""
        for placeholder, name in self.quoted.items():
            snippet = snippet.replace(placeholder, f"`{name}`")
        shown = snippet if len(snippet) <= 80 else snippet[:77] + "..."
        line, col = node.lineno, node.col_offset  # type: ignore[attr-defined]
        lines = self.code.splitlines(keepends=True) or [""]
        pos = sum(map(len, lines[: line - 1])) + len(lines[line - 1].encode()[:col].decode())
        pos += sum(len(n) + 2 - len(p) for p, n in self.quoted.items() if self.code.find(p) < pos)
        return ConfigError(
            f"{self.where}: {problem}: `{shown}` (at character {pos + self.lead + 1})"
        )


@dataclass(frozen=True, eq=False)
class Expression:
    """A compiled expression: ``evaluate(columns)`` -> one value per row (numpy array)."""

    text: str
    result: Result
    kinds: dict[str, str]  # the columns it reads -> "numeric" | "categorical"
    nodes: int
    fn: Callable[[Env], Any] = field(repr=False)

    def evaluate(self, columns: Columns, n: int | None = None) -> np.ndarray:
        """A bool, float64 or object (str/None) array: one value per row of ``columns``."""
        return evaluate_all([self], columns, n)[0]


# -- 1. parse: the grammar and the bounds -----------------------------------------------------
def parse(text: str, where: str = "expression") -> Parsed:
    """Check ``text`` against the grammar and the bounds (no column is known yet)."""
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"{where}: expression is too long: {len(text)} > {MAX_LENGTH} chars")
    code, quoted = _unquote(text, where)
    lead = len(code) - len(code.lstrip())  # a leading blank is an IndentationError
    code = code[lead:]
    try:
        with warnings.catch_warnings():  # e.g. '\d': the same string whatever the filters
            warnings.simplefilter("ignore")
            tree = ast.parse(code, mode="eval").body  # parses only: nothing compiled or run
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        detail, offset = getattr(e, "msg", None) or str(e), getattr(e, "offset", None)
        if isinstance(offset, int) and getattr(e, "lineno", 1) == 1 and not quoted:
            detail += f" (at character {offset + lead})"
        raise ConfigError(f"{where}: not a valid expression: {detail}") from None
    parsed = Parsed(text, where, (), 0, tree, code, lead, quoted)
    names: dict[str, None] = {}
    nodes, bad, lists = 0, [], set()
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:  # iterative: a deep tree cannot exhaust the Python stack here
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise parsed.fail(node, f"nested too deeply (more than {MAX_DEPTH} levels)")
        if (problem := _problem(node, id(node) in lists)) is not None:
            bad.append((node, problem))
        if isinstance(node, ast.Compare):
            ops = zip(node.ops, node.comparators, strict=True)
            lists |= {id(c) for op, c in ops if isinstance(op, ast.In | ast.NotIn)}
        elif isinstance(node, ast.Name):
            names[quoted.get(node.id, node.id)] = None
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr | ast.keyword)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            children.remove(node.func)  # a function's name, not a column
        stack.extend((c, depth + 1) for c in reversed(children))
    if bad:  # the first in the text; of nested ones, the innermost (`hr.__init__`)
        raise parsed.fail(*min(bad, key=lambda b: _span(b[0])))
    if nodes > MAX_NODES:
        raise ConfigError(f"{where}: expression is too large: {nodes} > {MAX_NODES} nodes")
    return Parsed(text, where, tuple(names), nodes, tree, code, lead, quoted)


def _span(node: ast.AST) -> tuple[int, int, int, int]:
    n: Any = node
    return (n.lineno, n.col_offset, n.end_lineno or 0, n.end_col_offset or 0)


def _problem(node: ast.AST, in_list: bool) -> str | None:
    """Why ``node`` is outside the grammar, or None."""
    if not isinstance(node, _ALLOWED + _ALLOWED_TOO):
        return f"{_REFUSED.get(type(node), type(node).__name__ + ' is')} not allowed"
    if isinstance(node, ast.BinOp) and type(node.op) not in _ARITHMETIC:
        return f"operator {_OPERATORS.get(type(node.op), '?')} is not allowed"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return "operator ~ is not allowed (use `not`)"
    if isinstance(node, ast.Compare) and any(isinstance(o, ast.Is | ast.IsNot) for o in node.ops):
        return "`is` is not allowed: use `==`, or isnull(x) for a missing value"
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):  # a refused callee is reported itself
            refused = isinstance(node.func, tuple(_REFUSED))
            return None if refused else "calling anything but a function by name is not allowed"
        if node.func.id not in FUNCTIONS:
            return f"function {node.func.id}() is not allowed; functions: {_FUNCTION_LIST}"
    if isinstance(node, ast.List | ast.Tuple):
        if not in_list:
            return "a list is only allowed on the right of `in` / `not in`"
        if len(node.elts) > MAX_LIST:
            return f"list is too long: {len(node.elts)} > {MAX_LIST} items"
        if not all(_is_literal(e) for e in node.elts):
            return "list items must be number or string literals"
    if isinstance(node, ast.Constant):
        v = node.value
        if v is None:
            return "None is not a value: test for a missing value with isnull(x)"
        if type(v) not in (bool, int, float, str):
            return f"{type(v).__name__} literals are not allowed"
        if isinstance(v, str) and len(v) > MAX_STRING:
            return f"string is too long: {len(v)} > {MAX_STRING} characters"
        if isinstance(v, int | float) and not abs(v) <= MAX_NUMBER:
            return f"number out of range: at most {MAX_NUMBER:.0e} in magnitude, and finite"
    return None


def _is_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)
    return isinstance(node, ast.Constant) and type(node.value) in (int, float, str)


# A string literal (left alone: a backtick in it is text) or a backtick-quoted name.
_QUOTED = re.compile(r"""('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")|`([^`]*)`""")


def _unquote(text: str, where: str) -> tuple[str, dict[str, str]]:
    """Replace each backtick-quoted name by a placeholder identifier found nowhere in
    ``text``; returns the code to parse and placeholder -> name."""
    if "`" not in text:
        return text, {}
    tag, by_name = "_q", dict[str, str]()
    while tag in text:
        tag += "q"

    def placeholder(m: re.Match[str]) -> str:
        if m[1] is not None:
            return m[1]
        if not m[2]:
            raise ConfigError(f"{where}: empty backtick name at character {m.start() + 1}")
        return by_name.setdefault(m[2], f"{tag}{len(by_name)}")

    code = _QUOTED.sub(placeholder, text)
    return code, {ph: name for name, ph in by_name.items()}


# -- 2. compile: names, types, constant parts computed once -------------------------------------
@dataclass(frozen=True)
class _Typed:
    type: str  # "bool" | "number" | "string"
    fn: Callable[[Env], Any]
    const: bool = False


def _const(type_: str, value: Any) -> _Typed:
    return _Typed(type_, lambda env: value, True)


def _apply(type_: str, fn: Callable[..., Any], *args: _Typed) -> _Typed:
    """``fn`` over the arguments' values; computed now if every argument is a constant."""
    if all(a.const for a in args):
        with np.errstate(all="ignore"):
            return _const(type_, fn(*(a.fn({}) for a in args)))
    if len(args) == 1:
        f0 = args[0].fn
        return _Typed(type_, lambda env: fn(f0(env)))
    if len(args) == 2:
        f0, f1 = args[0].fn, args[1].fn
        return _Typed(type_, lambda env: fn(f0(env), f1(env)))
    fs = [a.fn for a in args]
    return _Typed(type_, lambda env: fn(*[f(env) for f in fs]))


def compile_expression(
    text: str | Parsed, kinds: Mapping[str, str], result: Result, where: str = "expression"
) -> Expression:
    """Compile once against the columns' kinds (name -> "numeric" | "categorical") to the
    ``result`` the caller needs. Any problem is one ConfigError naming it."""
    parsed = parse(text, where) if isinstance(text, str) else text
    typed = _Compiler(parsed, kinds).visit(parsed.tree)
    if typed.type != result:
        raise parsed.fail(parsed.tree, f"must be {_WHAT[result]}, not {_WHAT[typed.type]}")
    used = {name: kinds[name] for name in parsed.names}
    return Expression(parsed.text, result, used, parsed.nodes, typed.fn)


class _Compiler:
    """One method per node type that ``parse`` lets through."""

    def __init__(self, parsed: Parsed, kinds: Mapping[str, str]) -> None:
        self.parsed, self.kinds, self.fail = parsed, kinds, parsed.fail

    def visit(self, node: ast.expr) -> _Typed:
        method: Callable[[Any], _Typed] = getattr(self, f"_{type(node).__name__}")
        return method(node)

    def need(self, node: ast.expr, typed: _Typed, want: str, who: str) -> None:
        if typed.type != want:
            raise self.fail(node, f"{who} needs {_WHAT[want]}, not {_WHAT[typed.type]}")

    def _Constant(self, node: ast.Constant) -> _Typed:
        v = node.value  # parse let only bool, int, float and str through
        if isinstance(v, str):
            return _const("string", v)
        if isinstance(v, bool):
            return _const("bool", np.bool_(v))
        return _const("number", np.float64(cast(float, v)))

    def _Name(self, node: ast.Name) -> _Typed:
        name = self.parsed.quoted.get(node.id, node.id)
        if self.kinds.get(name) not in _TYPE_OF_KIND:
            raise self.fail(node, f"unknown column {name!r} (columns: {sorted(self.kinds)})")
        return _Typed(_TYPE_OF_KIND[self.kinds[name]], operator.itemgetter(name))

    def _UnaryOp(self, node: ast.UnaryOp) -> _Typed:
        x = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            self.need(node.operand, x, "bool", "`not`")
            return _apply("bool", np.logical_not, x)
        self.need(node.operand, x, "number", "a sign")
        return _apply("number", np.negative if isinstance(node.op, ast.USub) else np.positive, x)

    def _BinOp(self, node: ast.BinOp) -> _Typed:
        fn, sym = _ARITHMETIC[type(node.op)]
        a, b = self.visit(node.left), self.visit(node.right)
        self.need(node.left, a, "number", f"`{sym}`")
        self.need(node.right, b, "number", f"`{sym}`")
        return _apply("number", fn, a, b)

    def _BoolOp(self, node: ast.BoolOp) -> _Typed:
        word, fn = (
            ("and", np.logical_and) if isinstance(node.op, ast.And) else ("or", np.logical_or)
        )
        values = [self.visit(v) for v in node.values]
        for v, typed in zip(node.values, values, strict=True):
            self.need(v, typed, "bool", f"`{word}`")
        return _apply("bool", lambda *xs: functools.reduce(fn, xs), *values)

    def _IfExp(self, node: ast.IfExp) -> _Typed:
        return self._choose(node, node.test, node.body, node.orelse)

    def _choose(self, node: ast.expr, test: ast.expr, a: ast.expr, b: ast.expr) -> _Typed:
        cond, yes, no = self.visit(test), self.visit(a), self.visit(b)
        self.need(test, cond, "bool", "the condition")
        if yes.type != no.type:
            raise self.fail(node, f"both branches must be of one type, not {yes.type}/{no.type}")
        if yes.type == "string":  # np.where makes fixed-width str; keep str/None objects
            return _apply(
                "string", lambda c, x, y: np.asarray(np.where(c, x, y), dtype=object), cond, yes, no
            )
        return _apply(yes.type, np.where, cond, yes, no)

    def _Compare(self, node: ast.Compare) -> _Typed:
        parts, left_node, left = [], node.left, self.visit(node.left)
        for i, (op, right_node) in enumerate(zip(node.ops, node.comparators, strict=True)):
            if isinstance(op, ast.In | ast.NotIn):
                if i + 1 < len(node.ops):
                    raise self.fail(node, "`in [...]` cannot be chained with a comparison")
                parts.append(self._member(left_node, left, right_node, isinstance(op, ast.NotIn)))
                continue
            right = self.visit(right_node)
            parts.append(self._compare(node, op, left, right))
            left_node, left = right_node, right
        return parts[0] if len(parts) == 1 else _apply("bool", _all, *parts)

    def _compare(self, node: ast.Compare, op: ast.cmpop, a: _Typed, b: _Typed) -> _Typed:
        if type(op) in _ORDER:
            fn, sym = _ORDER[type(op)]
            if a.type != "number" or b.type != "number":
                other = a.type if a.type != "number" else b.type
                hint = " (use == or in [...])" if other == "string" else ""
                raise self.fail(node, f"`{sym}` compares numbers, not {_WHAT[other]}{hint}")
            return _apply("bool", fn, a, b)
        if a.type != b.type:
            raise self.fail(node, f"cannot compare {_WHAT[a.type]} with {_WHAT[b.type]}")
        eq = _eq_strings if a.type == "string" else operator.eq
        if isinstance(op, ast.Eq):
            return _apply("bool", eq, a, b)
        return _apply("bool", lambda x, y: np.logical_not(eq(x, y)), a, b)

    def _member(self, left_node: ast.expr, left: _Typed, items: ast.expr, negate: bool) -> _Typed:
        if not isinstance(items, ast.List | ast.Tuple):
            raise self.fail(items, "`in` needs a literal list on its right, like ['a', 'b']")
        if left.type == "bool":
            raise self.fail(left_node, "`in` tests numbers or strings, not a condition")
        values = [self.visit(e).fn({}) for e in items.elts]
        if any(isinstance(v, str) != (left.type == "string") for v in values):
            raise self.fail(items, f"the list must hold only {left.type}s, like its left side")
        test: Callable[[Any], Any]
        if left.type == "string":
            test = functools.partial(_in_set, frozenset(values))
        elif 0 < len(values) <= 8:  # a few equalities beat np.isin's sort on small inputs
            test = functools.partial(_in_few, tuple(values))
        else:
            test = functools.partial(np.isin, test_elements=np.array(values, dtype=np.float64))
        member = _apply("bool", test, left)
        return _apply("bool", np.logical_not, member) if negate else member

    def _Call(self, node: ast.Call) -> _Typed:
        name = node.func.id  # type: ignore[attr-defined]  # parse refused any other callee
        if len(node.args) != _ARITY[name] and not (name == "round" and len(node.args) == 2):
            raise self.fail(
                node, f"{name}() takes {_ARITY[name]} argument(s), not {len(node.args)}"
            )
        if name == "where":
            return self._choose(node, *node.args)
        args = [self.visit(a) for a in node.args]
        if name in ("isnull", "notnull"):
            if args[0].type == "bool":
                raise self.fail(node, f"{name}() needs a number or a string, not a condition")
            missing = np.isnan if args[0].type == "number" else pd.isna
            fn = missing if name == "isnull" else (lambda x: np.logical_not(missing(x)))
            return _apply("bool", fn, args[0])
        for a_node, a in zip(node.args, args, strict=True):
            self.need(a_node, a, "number", f"{name}()")
        if name == "round":
            digits = args[1].fn({}) if len(args) == 2 and args[1].const else 0
            if len(args) == 2 and not (args[1].const and digits in range(-15, 16)):
                raise self.fail(node, "round(x, digits): digits must be a whole number, -15..15")
            return _apply("number", functools.partial(np.round, decimals=int(digits)), args[0])
        return _apply("number", _NUMERIC[name][1], *args)


def _all(*parts: Any) -> Any:
    return functools.reduce(np.logical_and, parts)


def _eq_strings(a: Any, b: Any) -> Any:
    """``==`` on strings; a missing value equals nothing, not even another missing value
    (NaN already does not; where ``a == b`` holds and ``a`` is None, so is ``b``)."""
    out = np.asarray(a == b, dtype=bool)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        out &= a != None  # noqa: E711 - numpy compares elementwise
    return out


def _in_set(values: frozenset[str], x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return np.fromiter((v in values for v in x), dtype=bool, count=len(x))
    return np.bool_(x in values)


def _in_few(values: Sequence[float], x: Any) -> Any:
    return functools.reduce(np.logical_or, [x == v for v in values])


# -- 3. evaluate: columns in, one array per expression out ------------------------------------
def evaluate_all(
    expressions: Sequence[Expression], columns: Columns, n: int | None = None
) -> list[np.ndarray]:
    """Evaluate expressions on the same columns, converting each column once: numeric to
    float64 (NaN = missing), categorical to an object array of str (None = missing)."""
    env: Env = {}
    for e in expressions:
        for name, kind in e.kinds.items():
            if name not in env:
                env[name] = _column(columns, name, kind)
    if n is None:
        n = (
            len(columns)
            if isinstance(columns, pd.DataFrame)
            else len(next(iter(columns.values()), ()))
        )
    for name, values in env.items():
        if len(values) != n:
            raise DataError(f"column {name!r} has {len(values)} values, expected {n}")
    with np.errstate(all="ignore"):
        results = [e.fn(env) for e in expressions]
    out = []
    for e, value in zip(expressions, results, strict=True):
        arr = np.asarray(value, dtype=_DTYPE[e.result])
        out.append(np.full(n, arr[()], dtype=arr.dtype) if arr.ndim == 0 else arr)
    return out


def _column(columns: Columns, name: str, kind: str) -> np.ndarray:
    if name not in columns:
        raise DataError(f"the input has no column {name!r}")
    values, dtype = columns[name], np.float64 if kind == "numeric" else object
    try:
        if isinstance(values, pd.Series):  # pandas' own dtypes hold pd.NA: make it NaN/None
            na = np.nan if kind == "numeric" else None
            plain = isinstance(values.dtype, np.dtype)
            values = values.to_numpy() if plain else values.to_numpy(dtype=dtype, na_value=na)
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise DataError(f"column {name!r} is not {kind}: {e}") from None
    if arr.ndim != 1:
        raise DataError(f"column {name!r} must be one-dimensional, not of shape {arr.shape}")
    return arr
