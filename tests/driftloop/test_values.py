"""driftloop/values.py: one verdict on times and numbers for the predictor and the collector."""

from __future__ import annotations

from datetime import datetime

import pytest

from driftloop import values

TIMES = [
    ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10)),
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12)),
    ("2024-05-01", datetime(2024, 5, 1)),  # naive: taken as UTC
    ("0001-01-01T00:00:00", datetime(1, 1, 1)),
    ("0001-01-01T00:00:00+01:00", None),  # year 0 in UTC
    ("9999-12-31T23:00:00-05:00", None),  # year 10000 in UTC
    ("yesterday", None),
    ("", None),
    (20240501, None),
    (None, None),
]


@pytest.mark.parametrize(("given", "expected"), TIMES)
def test_timestamp(given: object, expected: datetime | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            values.timestamp(given)
    else:
        assert values.timestamp(given) == expected


@pytest.mark.parametrize(
    ("given", "ok"),
    [(1, True), (-2.5, True), (1e308, True), (2**64, True), (True, False), ("1", False)]
    + [(float("inf"), False), (float("nan"), False), (10**400, False), ([1], False)],
)
def test_number(given: object, ok: bool) -> None:
    if ok:
        assert values.number(given) == float(given)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError):
            values.number(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(0, 0), ("7", 7), (2**63 - 1, 2**63 - 1), (2**63, None), ("99999999999999999999", None)]
    + [(-1, None), ("3.0", None), (3.0, None), (True, None), ("", None), (None, None)],
)
def test_integer(given: object, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            values.integer(given)
    else:
        assert values.integer(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [("a", "a"), (3, "3"), (3.0, "3"), (2.5, "2.5"), (b"x", "x")]
    + [(True, None), (float("nan"), None), (b"\xff", None), ([1], None)],
)
def test_category(given: object, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            values.category(given)
    else:
        assert values.category(given) == expected
