"""Times and numbers that cross the wire: one verdict for the predictor and the collector.

The predictor (``serving/protocol.py``) checks a request's ``timestamp`` and its numeric
features; the collector (``driftloop/decode.py``) checks the same request again when its
payload-log event arrives, and labels when they are posted. Both call these functions, so
a value one side accepts the other accepts too, and nothing that was accepted can fail
later, when it is written as Parquet (timestamp[us], int64, float64)::

    from driftloop.values import category, integer, number, timestamp
    number(2.5)                          # 2.5; ValueError for True, "2.5", inf, 1e400
    category(3.0)                        # "3"; ValueError for True, nan, [1]
    integer("3", low=1)                  # 3;   ValueError for "3.0", 2**63, -1
    timestamp("2024-05-01T12:00:00+02:00")   # datetime(2024, 5, 1, 10, 0): naive UTC

Every ValueError message says what was wrong with the value, not where it was: the
caller names the field.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

INT64_MAX = 2**63 - 1
_MAX_TEXT = 60  # characters of an offending value shown in a message


def show(v: Any) -> str:
    """A value for an error message: repr, cut to a readable length."""
    text = repr(v)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def number(v: Any) -> float:
    """A JSON number as float64: finite, not a bool (JSON ``true`` is not 1)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"expected a number, got {type(v).__name__} {show(v)}")
    try:
        x = float(v)
    except OverflowError:  # an int beyond float64
        x = math.inf
    if not math.isfinite(x):
        raise ValueError(f"{show(v)} is not a finite float64 number")
    return x


def category(v: Any) -> str:
    """A categorical value as the string it is compared as: ``3``, ``3.0`` and ``"3"`` are
    the category ``"3"``; bools, non-finite floats and containers are refused."""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("bytes are not UTF-8") from None
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return str(int(v)) if v.is_integer() else str(v)
    raise ValueError(f"expected a string category, got {type(v).__name__} {show(v)}")


def integer(v: Any, low: int = 0, high: int = INT64_MAX) -> int:
    """An integer (a JSON integer or a string of digits) within ``[low, high]``."""
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {show(v)}")
    if isinstance(v, str):
        text = v.strip()
        if not text.lstrip("-").isdigit() or len(text) > 20:
            raise ValueError(f"expected an integer, got {show(v)}")
        v = int(text)
    if not isinstance(v, int):
        raise ValueError(f"expected an integer, got {type(v).__name__} {show(v)}")
    if not low <= v <= high:
        raise ValueError(f"{show(v)} is outside [{low}, {high}]")
    return v


def timestamp(v: Any) -> datetime:
    """An ISO 8601 string (or datetime) as naive UTC, within years 1..9999 after the
    conversion (``0001-01-01T00:00:00+01:00`` is year 0 in UTC: refused)."""
    if isinstance(v, datetime):
        ts = v
    elif isinstance(v, str):
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{show(v)} is not an ISO 8601 time") from None
    else:
        raise ValueError(f"expected an ISO 8601 string, got {type(v).__name__} {show(v)}")
    if ts.tzinfo is None:
        return ts
    try:
        return ts.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError(f"{show(v)} is outside years 1..9999 in UTC") from None
