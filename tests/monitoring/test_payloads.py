"""driftloop/payloads.py: the log layout, windowed reads, corrupt files, labels and joins."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pytest

from driftloop.errors import DataError
from driftloop.payloads import (
    join_labels,
    log_key,
    log_schema,
    read_labels,
    read_logs,
    to_parquet,
    write_labels,
)
from driftloop.store import Store


def write_day(store: Store, day: str, rid: str, endpoint: str = "default", version: int = 1) -> str:
    t = datetime.fromisoformat(f"{day}T12:00:00")
    rows = [
        {
            "request_id": rid,
            "row": i,
            "event_time": t,
            "received_at": t,
            "model": "m",
            "version": version,
            "endpoint": endpoint,
            "inference_service": "m",
            "namespace": "ns",
            "x": float(i),
            "prediction": 0.5,
            "label": "yes",
            "rules_fired": "[]",
        }
        for i in range(2)
    ]
    table = pa.Table.from_pylist(rows, schema=log_schema({"x": "numeric"}))
    key = log_key("m", version, endpoint, date.fromisoformat(day))
    store.put(key, to_parquet(table))
    return key


def test_read_logs_filters_a_half_open_window(store: Store) -> None:
    for day, rid in [("2024-01-01", "a"), ("2024-01-02", "b"), ("2024-01-03", "c")]:
        write_day(store, day, rid)
    write_day(store, "2024-01-02", "k", endpoint="canary")
    write_day(store, "2024-01-02", "v2", version=2)
    df = read_logs(store, "m", 1, "default", start="2024-01-02", end="2024-01-03T12:00:00")
    assert df["request_id"].tolist() == ["b", "b"]  # end is exclusive, other leaves excluded
    assert set(read_logs(store, "m", endpoint="canary")["request_id"]) == {"k"}
    assert set(read_logs(store, "m")["request_id"]) == {"a", "b", "c", "k", "v2"}
    assert read_logs(store, "nobody").empty


def test_corrupt_parquet_is_a_data_error_naming_the_file(store: Store) -> None:
    write_day(store, "2024-01-01", "a")
    bad = "logs/m/v1/default/date=2024-01-05/broken.parquet"
    store.put(bad, b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="date=2024-01-05/broken.parquet"):
        read_logs(store, "m")
    # Partitions outside the window are never opened: the bad file does not matter there.
    assert len(read_logs(store, "m", 1, "default", start="2024-01-01", end="2024-01-02")) == 2
    assert len(read_logs(store, "m", start="2024-01-01", end="2024-01-02")) == 2


def test_labels_round_trip_and_join(store: Store) -> None:
    write_day(store, "2024-01-01", "a")
    keys = write_labels(
        store,
        "m",
        [
            {"request_id": "a", "row": 1, "label": "yes", "time": "2024-01-03T00:00:00+00:00"},
            {"request_id": "a", "label": 2.5, "time": "2024-01-04T00:00:00Z"},
            {"request_id": "a", "label": 3.5, "time": "2024-01-05T00:00:00Z"},  # a correction
        ],
    )
    assert len(keys) == 3 and all(k.startswith("labels/m/date=2024-01-0") for k in keys)
    labels = read_labels(store, "m")
    assert len(labels) == 3 and str(labels["label_time"].dtype) == "datetime64[us]"
    assert len(read_labels(store, "m", start="2024-01-04", end="2024-01-05")) == 1
    joined = join_labels(read_logs(store, "m"), labels)
    assert len(joined) == 2  # a left join: one row per logged instance
    by_row = joined.set_index("row")
    assert by_row.loc[0, "actual_value"] == 3.5  # the latest label wins
    assert by_row.loc[1, "actual"] == "yes" and pd.isna(by_row.loc[1, "actual_value"])


@pytest.mark.parametrize(
    ("label", "error"),
    [
        ({"row": 0, "label": 1}, "request_id"),
        ({"request_id": "a", "row": -1, "label": 1}, "row"),
        ({"request_id": "a", "label": None}, "label"),
        ({"request_id": "a", "label": True}, "label"),
        ({"request_id": "a", "label": 1, "time": "yesterday"}, "time"),
    ],
)
def test_write_labels_rejects_bad_entries_and_writes_nothing(
    store: Store, label: dict, error: str
) -> None:
    with pytest.raises(DataError, match=error):
        write_labels(store, "m", [{"request_id": "ok", "label": 1}, label])
    assert store.list("labels") == []


def test_label_times_are_bounded_and_the_later_one_wins(store: Store) -> None:
    write_day(store, "2024-01-01", "a")
    now = datetime(2024, 1, 10, 12, 0)
    with pytest.raises(DataError, match=r"labels\[0\].time: .* in the future"):
        write_labels(store, "m", [{"request_id": "a", "label": 9, "time": "9999-12-31"}], now)
    ok = {"request_id": "a", "label": 2, "time": "2024-01-10T12:04:00Z"}  # within 5 min
    write_labels(store, "m", [ok], now)
    # Same time, received later: the later receipt wins the tie.
    write_labels(store, "m", [{**ok, "label": 3}], now + pd.Timedelta(seconds=1))
    # Dated earlier (a backfill): it cannot displace a label with a later time.
    write_labels(store, "m", [{**ok, "label": 4, "time": "2024-01-05"}], now + pd.Timedelta(1, "h"))
    joined = join_labels(read_logs(store, "m"), read_labels(store, "m"))
    assert joined.set_index("row").loc[0, "actual_value"] == 3
    assert joined.set_index("row").loc[0, "actual"] == "3"  # an int label's text: "3"


def test_read_logs_pairs_stored_halves_and_drops_copies(tmp_path) -> None:
    """Halves the collectors stored unpaired are paired and decoded on read; a row logged
    twice (a retry, a replay) is read once."""
    from driftloop.decode import Event
    from driftloop.store import LocalStore
    from monitoring.buffer import BatchWriter, CollectorConfig, Metrics
    from tests.monitoring.helpers import SCHEMA, register_fake

    store = LocalStore(tmp_path / "store")
    register_fake(store, tmp_path)
    writer = BatchWriter(store, CollectorConfig(), Metrics(), lambda m, v: SCHEMA.kinds)

    def ev(is_req: bool, body: bytes, received: float) -> Event:
        e = Event(is_req, body, received, "2024-05-01T10:00:00Z", "bike", "ns", "default")
        e.model, e.version, e.rows = "bike", 0 if is_req else 1, 1 if is_req else 0
        return e

    req = b'{"instances": [{"temp": 3, "season": 4}]}'  # typed by the schema when read
    resp = b'{"predictions": [7.5], "model_name": "bike", "model_version": "1"}'
    t = 1_714_557_600.0
    writer.write([], [("h1", ev(True, req, t))])  # one replica had the request...
    writer.write([], [("h1", ev(False, resp, t + 0.01)), ("h2", ev(True, req, t))])  # ...one not
    writer.write([], [("h1", ev(True, req, t + 5))])  # a replayed copy
    writer.write([("p", ev(True, req, t), ev(False, resp, t))], [])
    writer.write([("p", ev(True, req, t + 9), ev(False, resp, t + 9))], [])  # a retried pair
    df = read_logs(store, "bike", 1, "default", "2024-05-01", "2024-05-02")
    assert sorted(df["request_id"]) == ["h1", "p"]  # h2 has no response (yet)
    assert df["temp"].tolist() == [3.0, 3.0] and df["season"].tolist() == ["4", "4"]
    assert df["prediction"].tolist() == [7.5, 7.5]
    assert str(df.set_index("request_id").loc["p", "received_at"]) == "2024-05-01 10:00:00"
    assert read_logs(store, "bike", 1, "canary").empty
    assert read_logs(store, "bike", start="2024-05-02").empty
