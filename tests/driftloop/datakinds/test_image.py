"""The image data kind: every source form reads to the same rows, and bad input is one
message naming the file or label."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from driftloop.data import TIME, load_window, split_by_time
from driftloop.datakinds.image import IMAGE
from driftloop.errors import ConfigError, DataError
from driftloop.images import decode_png, image_statistics, to_float
from driftloop.spec import load_spec
from driftloop.steps import spec_from_text, spec_to_text
from driftloop.validation import validate
from tests.conftest import ROOT
from tests.images import toy_image, write_image_folder, write_image_spec, write_toy_images


def test_digits_come_from_scikit_learn_in_order():
    spec = load_spec(ROOT / "data" / "digits.yaml")
    df = load_window(spec, None, None)
    assert len(df) == 1797 and list(df.columns) == [IMAGE, "digit", TIME]
    x = to_float(df[IMAGE].head(3).tolist())
    assert x.shape == (3, 1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    from sklearn.datasets import load_digits

    d = load_digits()
    np.testing.assert_allclose(x[:, 0], d.images[:3] / 16, atol=1 / 255)
    assert df["digit"].head(3).tolist() == ["0", "1", "2"]
    assert df[TIME].is_monotonic_increasing
    assert not validate(df, spec).failures


def test_a_spec_round_trips_through_the_pipeline_parameter():
    spec = load_spec(ROOT / "data" / "digits.yaml")
    again = spec_from_text(spec_to_text(spec))
    assert again.kind == "image" and again.source == spec.source and again.image == spec.image


def test_an_existing_spec_is_tabular_and_rejects_an_image_section(tmp_path):
    bike = load_spec(ROOT / "data" / "bike_sharing.yaml")
    assert bike.kind == "tabular" and bike.image is None
    assert "\nimage:" not in spec_to_text(bike)
    path = write_image_spec(tmp_path, {"path": "x"}, kind="tabular", numeric=["a"], image={})
    with pytest.raises(ConfigError, match="needs `kind: image`"):
        load_spec(path)
    path = write_image_spec(tmp_path, {"path": "x"}, numeric=["a"])
    with pytest.raises(ConfigError, match="numeric apply to tabular data"):
        load_spec(path)


def test_a_folder_with_labels_from_subfolders_in_file_order(tmp_path):
    spec = load_spec(write_toy_images(tmp_path, n=60))
    df = load_window(spec, None, None)
    assert len(df) == 60 and set(df["label"]) == {"a", "b", "c"}
    assert decode_png(df[IMAGE][0]).shape == (1, 12, 12)
    # File order is by name (the sequence number), across label folders.
    names = sorted(p.name for p in (tmp_path / "images").rglob("*.png"))
    first = (tmp_path / "images").glob(f"*/{names[0]}")
    assert df["label"][0] == next(first).parent.name


def test_resized_as_the_spec_says_and_never_enlarged_unasked(tmp_path):
    spec = load_spec(write_toy_images(tmp_path, n=30, image={"size": [6, 8], "resize": "crop"}))
    assert decode_png(load_window(spec, None, None)[IMAGE][0]).shape == (1, 6, 8)
    spec = load_spec(write_toy_images(tmp_path, n=30, image={"size": [16, 16]}))
    with pytest.raises(
        DataError, match=r"image \w/\d+\.png is 12x12 .* smaller than image.size 16x16"
    ):
        load_window(spec, None, None)
    spec = load_spec(write_toy_images(tmp_path, n=30, image={"size": [16, 16], "upscale": True}))
    assert decode_png(load_window(spec, None, None)[IMAGE][0]).shape == (1, 16, 16)


def test_a_csv_of_paths_and_a_parquet_of_bytes_read_the_same_images(tmp_path):
    root = write_image_folder(tmp_path / "images", n=40)
    files = sorted(root.rglob("*.png"), key=lambda p: p.name)
    when = pd.date_range("2021-01-01", periods=len(files), freq="D")
    table = pd.DataFrame(
        {
            "path": [str(p.relative_to(tmp_path)) for p in files],
            "y": [p.parent.name for p in files],
            "t": when,
        }
    )
    table.to_csv(tmp_path / "labels.csv", index=False)
    csv = load_spec(
        write_image_spec(tmp_path, {"path": "labels.csv"}, target="y", time={"column": "t"})
    )
    table.assign(image=[p.read_bytes() for p in files]).drop(columns="path").to_parquet(
        tmp_path / "images.parquet"
    )
    pq = load_spec(
        write_image_spec(tmp_path, {"path": "images.parquet"}, target="y", time={"column": "t"})
    )
    a, b = load_window(csv, None, "2021-01-21"), load_window(pq, None, "2021-01-21")
    assert len(a) == 20 and a.equals(b)


def test_mixed_channels_need_the_spec_to_say_which(tmp_path):
    write_image_folder(tmp_path / "images", n=20)
    toy_image(0, np.random.default_rng(1), rgb=True).save(tmp_path / "images" / "a" / "zz.png")
    spec = load_spec(write_image_spec(tmp_path, {"path": "images"}))
    with pytest.raises(
        DataError, match=r"images mix grey and colour \(e.g. .* a/zz.png is colour\)"
    ):
        load_window(spec, None, None)
    spec = load_spec(write_image_spec(tmp_path, {"path": "images"}, image={"channels": 3}))
    assert decode_png(load_window(spec, None, None)[IMAGE][0]).shape == (3, 12, 12)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: (r / "b" / "00001.png").write_bytes(b"not an image"),
            r"image b/00001.png cannot be decoded",
        ),
        (lambda r: (r / "d").mkdir(), r"label 'd' .* has no images"),
        (
            lambda r: Image.new("L", (20, 12)).save(r / "c" / "wide.png"),
            r"images have different sizes .* set image.size",
        ),
    ],
)
def test_bad_folders_fail_with_one_message_naming_the_file_or_label(tmp_path, damage, message):
    write_image_folder(tmp_path / "images", n=30)
    if not (tmp_path / "images" / "b" / "00001.png").exists():
        next((tmp_path / "images" / "b").iterdir()).rename(tmp_path / "images" / "b" / "00001.png")
    damage(tmp_path / "images")
    with pytest.raises(DataError, match=message):
        load_window(load_spec(write_image_spec(tmp_path, {"path": "images"})), None, None)


def test_a_bad_parquet_row_is_named(tmp_path):
    pd.DataFrame({"image": [b"junk"], "label": ["a"]}).to_parquet(tmp_path / "x.parquet")
    spec = load_spec(write_image_spec(tmp_path, {"path": "x.parquet"}))
    with pytest.raises(DataError, match=r"image row 0 cannot be decoded"):
        load_window(spec, None, None)


def test_statistics_see_blur_noise_and_brightness():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    x = np.stack([np.exp(-((xx - 4 - i % 8) ** 2) / 4.0)[None] for i in range(50)]).astype(
        np.float32
    )
    base = image_statistics(x)
    assert all(v.shape == (50,) for v in base.values())
    brighter = image_statistics(np.clip(x + 0.2, 0, 1))
    assert brighter["brightness"].mean() > base["brightness"].mean() + 0.1
    blurred = (x + np.roll(x, 1, axis=3) + np.roll(x, -1, axis=3)) / 3
    assert image_statistics(blurred)["sharpness"].mean() < base["sharpness"].mean() * 0.8
    noisy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    assert image_statistics(noisy)["sharpness"].mean() > base["sharpness"].mean() * 1.5


def test_split_keeps_time_order(tmp_path):
    spec = load_spec(write_toy_images(tmp_path, n=100))
    s = split_by_time(load_window(spec, None, None), spec)
    assert (
        s.train[TIME].max()
        < s.validation[TIME].min()
        <= s.validation[TIME].max()
        < s.test[TIME].min()
    )
