import numpy as np
import pandas as pd
import pytest

from driftloop.data import TIME, load_window, split_by_time
from driftloop.errors import DataError
from driftloop.spec import load_spec
from tests.toy import toy_frame, write_toy


def test_window_is_half_open_and_time_sorted(tmp_path):
    spec = load_spec(write_toy(tmp_path, frame=toy_frame().iloc[::-1]))  # file in reverse order
    df = load_window(spec, "2020-01-02", "2020-01-03")
    assert len(df) == 24
    assert df[TIME].min() == pd.Timestamp("2020-01-02 00:00")
    assert df[TIME].max() == pd.Timestamp("2020-01-02 23:00")
    assert df[TIME].is_monotonic_increasing
    assert list(df.columns) == ["a", "b", "colour", "y", TIME]  # dropped row_id, typed


def test_parquet_source_and_header_less_csv(tmp_path):
    spec = load_spec(write_toy(tmp_path / "pq", fmt="parquet"))
    assert len(load_window(spec, None, None)) == 800
    frame = toy_frame(50)
    frame.to_csv(tmp_path / "nohdr.csv", index=False, header=False)
    spec2 = load_spec(write_toy(tmp_path / "h", n=50))
    spec2 = spec2.model_copy(
        update={
            "source": spec2.source.model_copy(
                update={"path": str(tmp_path / "nohdr.csv"), "names": list(frame.columns)}
            )
        }
    )
    assert load_window(spec2, None, None)["a"].tolist() == pytest.approx(frame["a"].tolist())


def test_row_order_time_for_files_without_timestamps(tmp_path):
    spec = load_spec(
        write_toy(tmp_path, time={"row_order": {"start": "2008-05-01", "step": "30min"}})
    )
    df = load_window(spec, None, None)
    assert df[TIME].iloc[0] == pd.Timestamp("2008-05-01")
    assert (df[TIME].diff().dropna() == pd.Timedelta("30min")).all()


def test_bike_time_is_date_plus_hour():
    from tests.conftest import ROOT

    spec = load_spec(ROOT / "data" / "bike_sharing.yaml")
    df = load_window(spec, "2011-01-01", "2011-01-02")
    assert df[TIME].dt.hour.tolist() == df["hr"].astype(int).tolist()


def test_split_is_contiguous_in_time(tmp_path):
    spec = load_spec(write_toy(tmp_path))
    s = split_by_time(load_window(spec, None, None), spec)
    assert len(s.train) + len(s.validation) + len(s.test) == 800
    assert s.train[TIME].max() < s.validation[TIME].min()
    assert s.validation[TIME].max() < s.test[TIME].min()
    assert len(s.test) == 120 and len(s.validation) == 120


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["b"]), r"column\(s\) \['b'\] named in the spec are not"),
        (lambda f: f.assign(a=["x"] * len(f)), "numeric column 'a' has non-numeric values"),
        (
            lambda f: f.assign(when=["not a date"] * len(f)),
            r"column 'when': 800 of 800 values are not times in a format pandas infers "
            r"\(set time.format\) \(first: 'not a date'\)",
        ),
        (lambda f: f.assign(y=["?"] * len(f)), "target 'y' has non-numeric values"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, mutate, message):
    spec = load_spec(write_toy(tmp_path, frame=mutate(toy_frame())))
    with pytest.raises(DataError, match=message):
        load_window(spec, None, None)


def test_a_bad_time_format_is_one_line_with_the_count_and_first_offender(tmp_path):
    frame = toy_frame()
    frame["when"] = pd.to_datetime(frame["when"]).dt.strftime("%Y-%m-%d %H:%M")
    frame.loc[[5, 9, 700], "when"] = ["2020/01/01 05:00", "2020-13-01 09:00", "soon"]
    spec = load_spec(
        write_toy(tmp_path, frame=frame, time={"column": "when", "format": "%Y-%m-%d %H:%M"})
    )
    with pytest.raises(DataError) as e:
        load_window(spec, None, None)
    assert str(e.value) == (
        "column 'when': 3 of 800 values are not times in format '%Y-%m-%d %H:%M' "
        "(first: '2020/01/01 05:00')"
    )


def test_rows_without_a_time_are_one_error_not_dropped_by_a_window(tmp_path):
    frame = toy_frame()
    frame.loc[[17, 400], "when"] = None
    spec = load_spec(write_toy(tmp_path, frame=frame))
    message = (
        "column 'when': 2 of 800 rows have no time (first: row 17); every row needs one: "
        "fill or drop them before training"
    )
    for bounds in ((None, None), ("2020-01-02", "2020-01-20")):  # windowed: not dropped
        with pytest.raises(DataError) as e:
            load_window(spec, *bounds)
        assert str(e.value) == message


def test_empty_window_and_missing_file(tmp_path):
    spec = load_spec(write_toy(tmp_path))
    with pytest.raises(DataError, match=r"holds no rows \(the data spans 2020-01-01"):
        load_window(spec, "2030-01-01", "2031-01-01")
    with pytest.raises(DataError, match="start 2020-02-01 is not before end 2020-01-01"):
        load_window(spec, "2020-02-01", "2020-01-01")
    (tmp_path / "toy.csv").unlink()
    with pytest.raises(DataError, match="toy.csv does not exist"):
        load_window(spec, None, None)


def test_corrupt_parquet_is_a_data_error(tmp_path):
    spec = load_spec(write_toy(tmp_path, fmt="parquet"))
    (tmp_path / "toy.parquet").write_bytes(b"PAR1 this is not parquet" + np.zeros(9).tobytes())
    with pytest.raises(DataError, match="cannot read dataset .*toy.parquet as parquet"):
        load_window(spec, None, None)
