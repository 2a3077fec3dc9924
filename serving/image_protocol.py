"""Image requests in, responses out: V1 and V2 (Open Inference Protocol) for an
``ImageSchema`` (``schema.json`` of an image model). The tabular codec is
``serving.protocol``; ``serving.codecs`` picks one by the schema's kind.

Requests (``schema.input``: shape ``[C, H, W]``, FP32 values in [0, 1]):

    V2   {"inputs": [{"name": "image", "datatype": "FP32", "shape": [N, C, H, W],
                      "data": [...]}]}         JSON, flat or nested, or the binary extension
         {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [N],
                      "data": ["<base64 PNG/JPEG>", ...]}]}
    V1   {"instances": [[[...]]] | [{"b64": "<base64 PNG/JPEG>"}] | [{"image": [[...]]}]}
         (an instance is [C, H, W] nested lists, or [H, W] for a grey model)

Encoded images are decoded with Pillow and brought to the model's size and channels the
way its training data was (``driftloop.images``). Responses carry the label, the
probability of the label, every class's probability and the top k:

    V1   {"predictions": [label], "probabilities": [p], "class_probabilities": [[...]],
          "top_k": [[{"label": .., "probability": ..}, ...]], "model_name", "model_version"}
    V2   outputs prediction (BYTES [N]), probability (FP64 [N]), probabilities (FP32
         [N, classes]), top_k_labels (BYTES [N, k]), top_k_probabilities (FP64 [N, k])

Bad input (wrong shape or datatype, NaN/inf, values outside [0, 1], an image over the size
limit, bytes that do not decode) raises ``kserve.errors.InvalidInput``: a 400 naming it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from driftloop.datakinds.image import IMAGE
from driftloop.errors import DataError
from driftloop.formats import ImageSchema
from driftloop.images import decode, normalise
from driftloop.preprocess import Columns
from driftloop.spec import ImageOptions
from serving.protocol import _check_rows, _show, check_timestamp

FLOAT_TYPES = frozenset({"FP32", "FP64", "FP16"})


# -- decoding ------------------------------------------------------------------------------
def _tensor(values: Any, shape: list[int], schema: ImageSchema, where: str) -> np.ndarray:
    """Nested or flat numbers -> float32 ``shape``, finite and within the value range."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        raise InvalidInput(f"{where}: data is not a rectangular array of numbers") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidInput(f"{where}: data must be numbers, got {arr.dtype.kind!r} values")
    if arr.size != int(np.prod(shape)):
        raise InvalidInput(
            f"{where}: shape {shape} needs {int(np.prod(shape))} values, got {arr.size}"
        )
    x = arr.astype(np.float32).reshape(shape)
    if not np.isfinite(x).all():
        raise InvalidInput(f"{where}: values must be finite (no NaN or inf)")
    lo, hi = schema.input.value_range
    if x.size and (x.min() < lo or x.max() > hi):
        raise InvalidInput(
            f"{where}: pixel values must be in [{lo:g}, {hi:g}], got {x.min():g} .. {x.max():g}"
            + (" (scale 0-255 pixels by 1/255)" if x.max() > 1.5 else "")
        )
    return x


def _encoded(data: Any, schema: ImageSchema, where: str) -> np.ndarray:
    """One encoded image (bytes, or base64 text) -> float32 ``[C, H, W]``."""
    if isinstance(data, str):
        if len(data) > schema.input.max_bytes * 4 // 3 + 4:
            raise InvalidInput(f"{where}: encoded image over {schema.input.max_bytes} bytes")
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: not base64 text") from None
    if not isinstance(data, bytes | bytearray):
        raise InvalidInput(f"{where}: expected base64 text, got {type(data).__name__}")
    if len(data) > schema.input.max_bytes:
        raise InvalidInput(
            f"{where}: encoded image of {len(data)} bytes, over {schema.input.max_bytes}"
        )
    c, h, w = schema.input.shape
    opts = ImageOptions(
        size=(h, w),
        channels=1 if c == 1 else 3,
        resize=schema.input.resize,
        upscale=schema.input.upscale,
        max_pixels=schema.input.max_pixels,
    )
    try:  # grey and colour uploads alike are converted to the model's channels
        img = decode(bytes(data), where, schema.input.max_pixels)
        arr = normalise(img, opts, where, c)
    except DataError as e:
        raise InvalidInput(str(e)) from None
    return arr.astype(np.float32) / np.float32(255.0)


def _columns(images: list[np.ndarray] | np.ndarray) -> Columns:
    x = images if isinstance(images, np.ndarray) else np.stack(images)
    return {IMAGE: np.ascontiguousarray(x, dtype=np.float32)}


def decode_v1(body: Any, schema: ImageSchema, max_rows: int) -> Columns:
    if isinstance(body, bytes | bytearray | str):
        raise InvalidInput(
            "the request body must be a JSON object sent as Content-Type: application/json"
        )
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {type(body).__name__}")
    if "timestamp" in body:
        check_timestamp(body["timestamp"])
    instances = body.get("instances")
    if not isinstance(instances, list):
        raise InvalidInput('field "instances": expected a list of instances')
    _check_rows(len(instances), max_rows)
    c, h, w = schema.input.shape
    out = []
    for i, inst in enumerate(instances):
        where = f"instance {i}"
        if isinstance(inst, dict):
            if "b64" in inst:
                out.append(_encoded(inst["b64"], schema, where))
                continue
            if (
                isinstance(inst.get(schema.input.bytes_name), dict)
                and "b64" in inst[schema.input.bytes_name]
            ):
                out.append(_encoded(inst[schema.input.bytes_name]["b64"], schema, where))
                continue
            if schema.input.name in inst:
                inst = inst[schema.input.name]
            else:
                raise InvalidInput(
                    f'{where}: expected {{"b64": ...}}, {{"{schema.input.name}": [[...]]}} '
                    f"or nested lists of shape {[c, h, w]}"
                )
        if not isinstance(inst, list):
            raise InvalidInput(f"{where}: expected nested lists of shape {[c, h, w]}")
        shape = [h, w] if c == 1 and _depth(inst) == 2 else [c, h, w]
        out.append(_tensor(inst, shape, schema, where).reshape(c, h, w))
    return _columns(out)


def _depth(v: Any) -> int:
    d = 0
    while isinstance(v, list) and v:
        v, d = v[0], d + 1
    return d


def decode_v2(inputs: list, parameters: Any, schema: ImageSchema, max_rows: int) -> Columns:
    if parameters and "timestamp" in parameters:
        check_timestamp(parameters["timestamp"])
    names = {schema.input.name, schema.input.bytes_name}
    if len(inputs) != 1 or str(getattr(inputs[0], "name", "")) not in names:
        given = [str(getattr(t, "name", "")) for t in inputs]
        dims = ", ".join(map(str, schema.input.shape))
        raise InvalidInput(
            f"expected one input, {schema.input.name!r} (FP32 [N, {dims}]) "
            f"or {schema.input.bytes_name!r} (BYTES [N], encoded images); got {_show(given)}"
        )
    t = inputs[0]
    shape, dtype = t.shape, str(t.datatype)
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise InvalidInput(f"input {t.name!r}: shape must be a list of sizes, got {_show(shape)}")
    if t.name == schema.input.bytes_name:
        if dtype != "BYTES":
            raise InvalidInput(
                f"input {t.name!r}: encoded images need datatype BYTES, got {_show(dtype)}"
            )
        if len(shape) != 1:
            raise InvalidInput(f"input {t.name!r}: shape must be [N], got {shape}")
        data = t.data if isinstance(t.data, list) else []
        if len(data) != shape[0]:
            raise InvalidInput(f"input {t.name!r}: shape {shape} but {len(data)} values")
        _check_rows(shape[0], max_rows)
        return _columns([_encoded(d, schema, f"image {i}") for i, d in enumerate(data)])
    if dtype not in FLOAT_TYPES:
        raise InvalidInput(f"input {t.name!r}: pixels need datatype FP32, got {_show(dtype)}")
    c, h, w = schema.input.shape
    if len(shape) != 4 or shape[1:] != [c, h, w]:
        raise InvalidInput(
            f"input {t.name!r}: shape must be [N, {c}, {h}, {w}], got {_show(shape)}"
        )
    _check_rows(shape[0], max_rows)
    return _columns(_tensor(t.data, shape, schema, f"input {t.name!r}"))


# -- responses -------------------------------------------------------------------------------
def _top_k(schema: ImageSchema, pred: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N, k], probabilities [N, k]), most probable first."""
    probs = _class_probabilities(schema, pred)
    k = min(schema.top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    labels = np.asarray(schema.classes, dtype=object)[order]
    return labels, np.take_along_axis(probs, order, axis=1)


def _class_probabilities(schema: ImageSchema, pred: dict[str, np.ndarray]) -> np.ndarray:
    if "probabilities" in pred:
        return pred["probabilities"]
    p = pred["probability"]  # binary: P(positive); classes are [neg, pos] in schema order
    pos = schema.classes.index(str(schema.positive_label))
    out = np.empty((len(p), 2))
    out[:, pos], out[:, 1 - pos] = p, 1 - p
    return out


def v1_response(
    model_name: str, version: int, schema: ImageSchema, pred: dict[str, np.ndarray]
) -> dict:
    labels, probs = _top_k(schema, pred)
    return {
        "model_name": model_name,
        "model_version": str(version),
        "predictions": [str(x) for x in pred["label"]],
        "probabilities": pred["probability"].tolist(),
        "class_probabilities": _class_probabilities(schema, pred).tolist(),
        "top_k": [
            [{"label": str(lab), "probability": float(p)} for lab, p in zip(lr, pr, strict=True)]
            for lr, pr in zip(labels, probs, strict=True)
        ],
    }


def v2_outputs(schema: ImageSchema, pred: dict[str, np.ndarray]) -> list[dict]:
    labels, probs = _top_k(schema, pred)
    n, k = labels.shape
    every = _class_probabilities(schema, pred)
    return [
        {
            "name": "prediction",
            "datatype": "BYTES",
            "shape": [n],
            "data": [str(x) for x in pred["label"]],
        },
        {
            "name": "probability",
            "datatype": "FP64",
            "shape": [n],
            "data": pred["probability"].tolist(),
        },
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [n, every.shape[1]],
            "data": every.astype(np.float32).ravel().tolist(),
        },
        {
            "name": "top_k_labels",
            "datatype": "BYTES",
            "shape": [n, k],
            "data": [str(x) for x in labels.ravel()],
        },
        {
            "name": "top_k_probabilities",
            "datatype": "FP64",
            "shape": [n, k],
            "data": probs.ravel().tolist(),
        },
    ]


def input_types(schema: ImageSchema) -> list[dict]:
    """What ``GET /v2/models/<name>`` lists: the pixel tensor, and encoded images."""
    return [
        {"name": schema.input.name, "datatype": "FP32", "shape": [-1, *schema.input.shape]},
        {"name": schema.input.bytes_name, "datatype": "BYTES", "shape": [-1]},
    ]


def output_types(schema: ImageSchema) -> list[dict]:
    k, n_classes = min(schema.top_k, len(schema.classes)), len(schema.classes)
    return [
        {"name": "prediction", "datatype": "BYTES", "shape": [-1]},
        {"name": "probability", "datatype": "FP64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
        {"name": "top_k_labels", "datatype": "BYTES", "shape": [-1, k]},
        {"name": "top_k_probabilities", "datatype": "FP64", "shape": [-1, k]},
    ]
