"""``image``: one labelled image per row.

Sources (``source.format``; a directory is a folder):

    folder    <root>/<label>/<file>.png|jpg: the label is the subfolder's name; time order is
              the files' order by name (then label), so name files by capture time or
              sequence and declare ``time.row_order``
    csv       a column of image paths (``image.path_column``, relative to the CSV) next to
              the label (``target``) and, optionally, a time column
    parquet   a column of encoded PNG/JPEG bytes (``image.bytes_column``) next to the label
    sklearn   a dataset bundled with scikit-learn (``digits``: 1,797 8x8 grey images of the
              digits 0-9, values 0-16 scaled to 0-255), read from the installed package

Every image is decoded with Pillow, converted to the spec's channels and brought to its size
(``image.size``, ``image.resize``), then stored as PNG bytes in the ``image`` column
(``driftloop.images``). Bad input is one DataError naming the file or label: an unreadable
file, grey and colour images mixed with no ``image.channels``, different sizes with no
``image.size``, a size larger than an image, a label folder with no images.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from driftloop.datakinds import DataKind
from driftloop.errors import DataError
from driftloop.images import channels_of, decode, encode_png, normalise

if TYPE_CHECKING:
    from driftloop.data import Splits
    from driftloop.spec import DatasetSpec
    from driftloop.validation import ValidationReport

IMAGE = "image"  # the column of PNG bytes every image frame carries
# The linear baseline sees at most 16x16 pixels per channel: enough for a reference, and
# it keeps a logistic regression on thousands of large images to seconds.
BASELINE_SIDE = 16


def source_format(spec: DatasetSpec) -> str:
    fmt = spec.source.format
    if fmt is not None:
        return fmt
    uri = spec.source_uri
    if uri.endswith((".parquet", ".pq")):
        return "parquet"
    if not uri.startswith("s3://") and Path(uri.removeprefix("file://")).is_dir():
        return "folder"
    return "csv"


class Images(DataKind):
    name = "image"

    # -- reading -----------------------------------------------------------------------
    def read(self, spec: DatasetSpec) -> pd.DataFrame:
        from driftloop.data import TIME, event_time, read_source

        fmt = source_format(spec)
        if fmt == "sklearn":
            raw = _sklearn(spec.source.path)
        elif fmt == "folder":
            raw = _folder(spec)
        else:
            table = read_source(spec.model_copy(update={"source": _tabular_source(spec, fmt)}))
            raw = _from_table(table, spec, fmt)
        out = pd.DataFrame({IMAGE: self._normalised(raw["data"], raw["where"], spec)})
        out[spec.target] = raw["label"].astype("string").astype(object).to_numpy()
        out[TIME] = event_time(raw, spec).to_numpy()
        return out

    def _normalised(self, data: Iterable[bytes], where: Iterable[str], spec: DatasetSpec) -> list:
        """Decode every image, check they agree, convert and resize, re-encode as PNG."""
        opts = spec.image_options
        decoded = [(decode(d, w, opts.max_pixels), w) for d, w in zip(data, where, strict=True)]
        if not decoded:
            raise DataError(f"dataset {spec.source_uri} holds no images")
        channels: int | None = opts.channels
        if channels is None:
            by = {c: w for img, w in decoded for c in [channels_of(img)]}
            if len(by) > 1:
                raise DataError(
                    f"images mix grey and colour (e.g. {by[1]} is grey, {by[3]} is colour): "
                    "set image.channels to 1 or 3 to convert them all"
                )
            channels = next(iter(by))
        if opts.size is None:
            sizes = {(img.height, img.width): w for img, w in decoded}
            if len(sizes) > 1:
                (s1, w1), (s2, w2) = list(sizes.items())[:2]
                raise DataError(
                    f"images have different sizes ({w1} is {s1[0]}x{s1[1]}, {w2} is "
                    f"{s2[0]}x{s2[1]}): set image.size: [height, width] to resize them"
                )
        c = int(channels)
        return [encode_png(normalise(img, opts, w, c)) for img, w in decoded]

    # -- validation --------------------------------------------------------------------
    def validate(self, df: pd.DataFrame, spec: DatasetSpec) -> ValidationReport:
        from driftloop.data import split_by_time
        from driftloop.validation import ValidationReport, check_target_and_splits

        report = ValidationReport(dataset=spec.name, rows=len(df))
        missing = int(df[IMAGE].isna().sum())
        report.add(
            "missing",
            IMAGE,
            missing == 0,
            f"{missing} row(s) without an image",
            expected="an image on every row",
        )
        dup = float(df[IMAGE].duplicated().mean()) if len(df) else 0.0
        q = spec.quality
        report.add(
            "duplicates",
            IMAGE,
            dup <= q.max_duplicate_share,
            f"{dup:.1%} duplicate images",
            expected=f"at most {q.max_duplicate_share:.0%} (quality.max_duplicate_share)",
        )
        check_target_and_splits(df, spec, report)
        train = split_by_time(df, spec).train
        labels = set(df[spec.target].dropna().astype(str))
        unseen = sorted(labels - set(train[spec.target].dropna().astype(str)))
        report.add(
            "classes in train",
            spec.target,
            not unseen,
            f"label(s) {unseen[:10]} appear only after the training split" if unseen else "all",
            expected="every label in the training split too",
            warn=True,
        )
        return report

    # -- baselines ---------------------------------------------------------------------
    def baselines(self, splits: Splits, spec: DatasetSpec) -> dict[str, dict[str, float]]:
        """The class prior and a logistic regression on (downsampled) pixels."""
        from sklearn.dummy import DummyClassifier
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        from driftloop.metrics import classification_metrics, tune_threshold

        x = {k: _pixels(getattr(splits, k)[IMAGE]) for k in ("train", "validation", "test")}
        y = {k: getattr(splits, k)[spec.target].astype(str).to_numpy() for k in x}
        out = {}
        for name, est in (
            ("dumb", DummyClassifier(strategy="prior")),
            ("linear", LogisticRegression(max_iter=300, C=1.0)),
        ):
            # One BLAS thread: on a shared 2-core machine lbfgs with a pool of threads
            # was 60x slower (4.4 s vs 0.07 s on digits), and trials run side by side.
            with threadpool_limits(1):
                est.fit(x["train"], y["train"])
            if spec.task == "binary":
                pos = list(est.classes_).index(spec.positive_label)
                y_va = (y["validation"] == spec.positive_label).astype(int)
                t = tune_threshold(y_va, est.predict_proba(x["validation"])[:, pos], spec.metric)
                p = est.predict_proba(x["test"])[:, pos]
                neg = next(c for c in est.classes_ if c != spec.positive_label)
                label = np.asarray(np.where(p >= t, spec.positive_label, neg))
                out[name] = classification_metrics(y["test"], label, p, spec.positive_label)
            else:
                pred = np.asarray(est.predict(x["test"]))
                out[name] = classification_metrics(y["test"], pred, None, None)
        return out


def _pixels(images: pd.Series) -> np.ndarray:
    """Flattened pixels, average-pooled to at most BASELINE_SIDE per side."""
    from driftloop.images import to_float

    x = to_float(list(images))
    n, c, h, w = x.shape
    fh, fw = -(-h // BASELINE_SIDE), -(-w // BASELINE_SIDE)
    if fh > 1 or fw > 1:
        x = x[:, :, : h - h % fh, : w - w % fw]
        x = x.reshape(n, c, h // fh, fh, w // fw, fw).mean(axis=(3, 5))
    return x.reshape(n, -1)


# -- sources -------------------------------------------------------------------------------
def _sklearn(name: str) -> pd.DataFrame:
    from sklearn.datasets import load_digits

    assert name == "digits"
    d = load_digits()
    pixels = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return pd.DataFrame(
        {
            "data": [encode_png(p[None]) for p in pixels],
            "where": [f"digits[{i}]" for i in range(len(pixels))],
            "label": d.target.astype(str),
        }
    )


def _folder(spec: DatasetSpec) -> pd.DataFrame:
    uri = spec.source_uri
    if uri.startswith("s3://"):
        raise DataError(
            f"image folder {uri}: folders are read from a local disk; for an object store, "
            "pack the images as Parquet with a bytes column (image.bytes_column)"
        )
    root = Path(uri.removeprefix("file://"))
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    suffixes = {s.lower() for s in spec.image_options.extensions}
    rows = []
    labels = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not labels:
        raise DataError(f"image folder {root} has no label subfolders (<root>/<label>/<file>)")
    for label_dir in labels:
        files = [p for p in label_dir.rglob("*") if p.is_file() and p.suffix.lower() in suffixes]
        if not files:
            raise DataError(
                f"label {label_dir.name!r} ({label_dir}) has no images "
                f"({', '.join(sorted(suffixes))}): add some or remove the folder"
            )
        rows += [(p.name, label_dir.name, p) for p in files]
    rows.sort(key=lambda r: (r[0], r[1], str(r[2])))  # file order: by name, then label
    return pd.DataFrame(
        {
            "data": [_read_file(p) for _, _, p in rows],
            "where": [str(p.relative_to(root)) for _, _, p in rows],
            "label": [label for _, label, _ in rows],
        }
    )


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"image {path} cannot be read: {e}") from e


def _tabular_source(spec: DatasetSpec, fmt: str) -> object:
    return spec.source.model_copy(update={"format": fmt})


def _from_table(table: pd.DataFrame, spec: DatasetSpec, fmt: str) -> pd.DataFrame:
    opts = spec.image_options
    column = opts.bytes_column if fmt == "parquet" else opts.path_column
    needed = [column, spec.target] + [c for c in (spec.time.column, spec.time.hour_column) if c]
    if missing := [c for c in needed if c not in table.columns]:
        raise DataError(
            f"column(s) {missing} named in the spec are not in {spec.source_uri} "
            f"(it has: {list(table.columns)[:30]})"
        )
    if (no_label := table[spec.target].isna()).any():
        raise DataError(f"row {int(np.flatnonzero(no_label)[0])} of {spec.source_uri} has no label")
    if fmt == "parquet":
        values = table[column].tolist()
        bad = next((i for i, v in enumerate(values) if not isinstance(v, bytes | bytearray)), None)
        if bad is not None:
            raise DataError(
                f"row {bad} of {spec.source_uri}: column {column!r} must hold encoded image "
                f"bytes, got {type(values[bad]).__name__}"
            )
        data, where = [bytes(v) for v in values], [f"row {i}" for i in range(len(values))]
    else:
        if spec.source_uri.startswith("s3://"):
            raise DataError("a CSV of image paths is read from a local disk; use Parquet bytes")
        base = Path(spec.source_uri.removeprefix("file://")).parent
        paths = [base / str(p) for p in table[column]]
        data, where = [_read_file(p) for p in paths], [str(p) for p in paths]
    out = table.drop(columns=[column]).copy()
    out["data"], out["where"], out["label"] = data, where, table[spec.target]
    return out.reset_index(drop=True)


KIND = Images()
