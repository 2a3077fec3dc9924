"""Small image datasets written as a user would bring their own: a folder of PNGs with one
subfolder per label, and its spec. The images are drawn, not downloaded: each class is a
bright bar at its own angle on a dark, noisy background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

CLASSES = ("a", "b", "c")


def toy_image(
    label: int, rng: np.random.Generator, size: int = 12, rgb: bool = False
) -> Image.Image:
    """A short bar at 0, 60 or 120 degrees, anywhere near the centre, with noise: a
    linear model on pixels cannot tell them apart perfectly, a convolutional one can."""
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2 + rng.normal(0, 1.8, 2)[:, None, None]
    angle = np.deg2rad(60 * label + rng.normal(0, 8))
    dist = np.abs(xx * np.sin(angle) - yy * np.cos(angle))
    along = np.abs(xx * np.cos(angle) + yy * np.sin(angle))
    bar = np.exp(-(dist**2) / 1.5) * (along < size / 4)
    img = np.clip(bar + rng.normal(0, 0.15, (size, size)), 0, 1)
    arr = (img * 255).astype(np.uint8)
    return Image.fromarray(np.stack([arr] * 3, -1) if rgb else arr)


def write_image_folder(
    root: Path, n: int = 600, seed: int = 0, size: int = 12, classes: int = 3
) -> Path:
    """``root/<label>/<seq>.png``: the sequence number is the time order."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = int(rng.integers(classes))
        d = root / CLASSES[label]
        d.mkdir(parents=True, exist_ok=True)
        toy_image(label, rng, size).save(d / f"{i:05d}.png")
    return root


def write_image_spec(directory: Path, source: dict, **overrides: object) -> Path:
    spec = {
        "name": "toy-images",
        "kind": "image",
        "source": source,
        "time": {"row_order": {"start": "2020-01-01", "step": "1h"}},
        "target": "label",
        "task": "multiclass",
        "metric": "accuracy",
        "quality": {"min_rows_per_split": 50},
    }
    spec.update(overrides)
    path = directory / "images.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_toy_images(directory: Path, n: int = 600, classes: int = 3, **overrides: object) -> Path:
    """A folder of toy images and its spec in ``directory``; returns the spec path."""
    write_image_folder(directory / "images", n, classes=classes)
    return write_image_spec(directory, {"path": "images"}, **overrides)
