"""Images in, arrays out: decoding (Pillow), normalising to the spec's size and channels,
and the few statistics monitoring keeps of every image.

One representation everywhere past decoding: **PNG bytes of a uint8 image already at the
model's size and channels** (lossless, self-describing, compact in Parquet). The image
data kind stores rows that way (``driftloop.datakinds.image``); the family turns them into
float32 tensors ``[N, C, H, W]`` in ``[0, 1]`` (``to_float``), which is also what the
predictor accepts as a V2 FP32 tensor.

    arr = normalise(decode(data, "cat/001.jpg"), opts, "cat/001.jpg")   # uint8 [C, H, W]
    png = encode_png(arr)
    x = to_float([png, ...])                                            # float32 [N, C, H, W]
    stats = image_statistics(x)                                         # brightness, ...

Every failure is one DataError naming the image (its file name, or its index in a request).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from driftloop.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

    from driftloop.spec import ImageOptions

# The statistics logged and watched for every image (their meaning: ``image_statistics``).
STATISTICS = ("brightness", "contrast", "sharpness")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def decode(data: bytes, where: str, max_pixels: int = 4096 * 4096) -> Image.Image:
    """A PNG or JPEG (any format Pillow reads) from its bytes; DataError naming ``where``
    for bytes that do not decode or an image over ``max_pixels``, checked before the pixels
    are decompressed (a decompression bomb never allocates)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise DataError(
                    f"image {where} is {w}x{h} pixels, over the limit of {max_pixels} "
                    "(image.max_pixels)"
                )
            img.load()
    except DataError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as e:
        raise DataError(f"image {where} cannot be decoded as PNG or JPEG: {e}") from e
    return img


def channels_of(img: Image.Image) -> int:
    """1 for a grey image, 3 for colour (palette and CMYK images count as colour)."""
    return 1 if img.mode in GREY_MODES else 3


def normalise(img: Image.Image, opts: ImageOptions, where: str, channels: int) -> np.ndarray:
    """The image as uint8 ``[channels, H, W]`` at ``opts.size`` (when set), resized as the
    spec says. DataError naming ``where`` when it is smaller than the size asked for and
    ``opts.upscale`` is off."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    if opts.size is not None:
        h, w = opts.size
        if (img.height < h or img.width < w) and not opts.upscale:
            raise DataError(
                f"image {where} is {img.height}x{img.width} (height x width), smaller than "
                f"image.size {h}x{w}: lower image.size, or set image.upscale: true"
            )
        if opts.resize == "crop":
            scale = max(h / img.height, w / img.width)
            sh, sw = max(h, round(img.height * scale)), max(w, round(img.width * scale))
            img = img.resize((sw, sh), Image.Resampling.BILINEAR)
            top, left = (sh - h) // 2, (sw - w) // 2
            img = img.crop((left, top, left + w, top + h))
        elif img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def encode_png(arr: np.ndarray) -> bytes:
    """uint8 ``[C, H, W]`` (C = 1 or 3) -> PNG bytes (lossless)."""
    from PIL import Image

    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # speed over size: rows are small
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes this module wrote -> uint8 ``[C, H, W]``."""
    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(data)))
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def to_float(images: Sequence[bytes]) -> np.ndarray:
    """Stored rows (PNG bytes, one shape) -> float32 ``[N, C, H, W]`` in [0, 1]."""
    if len(images) == 0:
        return np.empty((0, 1, 1, 1), np.float32)
    arrays = [decode_png(b) for b in images]
    return (np.stack(arrays).astype(np.float32) / np.float32(255.0)).astype(np.float32)


def image_statistics(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per image of ``x`` (float ``[N, C, H, W]`` in [0, 1]), float64 ``[N]`` each:

    - brightness: the mean intensity (channels averaged);
    - contrast: the standard deviation of the intensity;
    - sharpness: the standard deviation of the 4-neighbour Laplacian of the intensity
      (blur lowers it, noise raises it; 0 for an image under 3x3).

    Model-independent, so they drift only when the images do, whatever the model learnt.
    """
    grey = x.mean(axis=1, dtype=np.float64)  # [N, H, W]
    n = grey.shape[0]
    flat = grey.reshape(n, -1)
    if grey.shape[1] >= 3 and grey.shape[2] >= 3:
        lap = (
            grey[:, :-2, 1:-1]
            + grey[:, 2:, 1:-1]
            + grey[:, 1:-1, :-2]
            + grey[:, 1:-1, 2:]
            - 4 * grey[:, 1:-1, 1:-1]
        )
        sharp = lap.reshape(n, -1).std(axis=1)
    else:
        sharp = np.zeros(n)
    return {"brightness": flat.mean(axis=1), "contrast": flat.std(axis=1), "sharpness": sharp}
