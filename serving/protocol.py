"""Requests in, responses out: V1 and V2 (Open Inference Protocol) against schema.json.

Plain functions, no server: ``decode_v1`` / ``decode_v2`` turn a decoded request body
into typed columns for ``FittedModel.predict`` (numeric -> float64 array, categorical ->
list of str) or raise ``kserve.errors.InvalidInput`` (HTTP 400) with a message naming the field;
``v1_response`` / ``v2_outputs`` build the response bodies. Nothing here can raise
anything else for bad input: kserve turns any other exception into a 500.

    from serving.protocol import decode_v1
    decode_v1({"instances": [{...}]}, schema, max_rows=1000)   # a formats.TabularSchema
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from driftloop.formats import FeatureSchema, TabularSchema
from driftloop.preprocess import Columns
from driftloop.values import category, number, show, timestamp

NUMERIC_TYPES = frozenset(
    {
        "FP16",
        "FP32",
        "FP64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    }
)
_MISSING = None  # a JSON null is a missing value: imputed (numeric) or the unknown bucket


# -- values ------------------------------------------------------------------------------
def _numeric(f: FeatureSchema, values: list) -> np.ndarray:
    out = np.empty(len(values), dtype="float64")
    for i, v in enumerate(values):
        if v is _MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = number(v)  # the collector checks logged values with the same rule
        except ValueError as e:
            raise InvalidInput(f"field {f.name!r}: {e}") from None
    return out


def _categorical(f: FeatureSchema, values: list, reject_unknown: bool) -> list[str | None]:
    out: list[str | None] = []
    for v in values:
        if v is _MISSING:
            out.append(None)
            continue
        try:
            s = category(v)  # categories compare as strings: 3, 3.0 and "3" are the same
        except ValueError as e:
            raise InvalidInput(f"field {f.name!r}: {e}") from None
        if reject_unknown and s not in f.category_set:
            known = sorted(f.category_set)
            raise InvalidInput(
                f"field {f.name!r}: unknown category {_show(s)}; "
                f"known: {known[:20]}{' ...' if len(known) > 20 else ''}"
            )
        out.append(s)
    return out


_show = show


def to_columns(columns: dict[str, list], schema: TabularSchema) -> Columns:
    """Raw values per feature (every feature, equal lengths) -> the model's typed input:
    numeric features a float64 array (NaN = missing), categorical ones a list of str/None.
    No DataFrame: building one would cost more than the whole model on a single row."""
    reject = schema.unknown_category == "reject"
    return {
        f.name: _numeric(f, columns[f.name])
        if f.kind == "numeric"
        else _categorical(f, columns[f.name], reject)
        for f in schema.features
    }


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise InvalidInput("no rows: send at least one instance")
    if n > max_rows:
        raise InvalidInput(f"too many rows: {n} > {max_rows} per request; split the batch")


def _check_names(given: list[str], schema: TabularSchema, where: str) -> None:
    expected = set(schema.names)
    if missing := [n for n in schema.names if n not in given]:
        raise InvalidInput(
            f"{where}missing field {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if unknown := [n for n in given if n not in expected]:
        raise InvalidInput(f"{where}unknown field {_show(unknown[0])}; expected {schema.names}")


# -- V1 ------------------------------------------------------------------------------------
def decode_v1(body: Any, schema: TabularSchema, max_rows: int) -> Columns:
    """``{"instances": [...], "timestamp"?: ISO 8601}`` -> columns. Instances are objects
    keyed by feature name or lists in schema order. ``timestamp`` is the event time (the
    collector logs it); it is checked here and otherwise ignored."""
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
    names = schema.names
    columns: dict[str, list] = {n: [] for n in names}
    for i, inst in enumerate(instances):
        if isinstance(inst, dict):
            if len(inst) != len(names) or any(n not in inst for n in names):
                _check_names(list(inst), schema, f"instance {i}: ")
            for n in names:
                columns[n].append(inst[n])
        elif isinstance(inst, list):
            if len(inst) != len(names):
                raise InvalidInput(
                    f"instance {i}: a list instance needs {len(names)} values "
                    f"in schema order {names}, got {len(inst)}"
                )
            for n, v in zip(names, inst, strict=True):
                columns[n].append(v)
        else:
            raise InvalidInput(
                f"instance {i}: expected an object or a list, got {type(inst).__name__}"
            )
    try:
        return to_columns(columns, schema)
    except InvalidInput as e:
        raise InvalidInput(f"{e} (instances)") from None


def check_timestamp(value: Any) -> None:
    """The event time a request may carry; the collector logs it, so both check it with
    ``driftloop.values.timestamp`` (ISO 8601, years 1..9999 once converted to UTC)."""
    if not isinstance(value, str):
        raise InvalidInput('field "timestamp": expected an ISO 8601 string')
    try:
        timestamp(value)
    except ValueError as e:
        raise InvalidInput(f'field "timestamp": {e}') from None


def v1_response(
    model_name: str, version: int, pred: dict[str, np.ndarray], rules_fired: list[list[str]] | None
) -> dict:
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if "value" in pred:
        body["predictions"] = pred["value"].tolist()
    else:
        body["predictions"] = pred["label"].tolist()
        body["probabilities"] = pred["probability"].tolist()
    if rules_fired is not None:
        body["rules_fired"] = rules_fired
    return body


# -- V2 ------------------------------------------------------------------------------------
def _flatten(data: Any, name: str) -> list:
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: data must be a list")
    if data and all(isinstance(x, list) for x in data):
        flat = []
        for part in data:
            if any(isinstance(x, list) for x in part):
                raise InvalidInput(f"input {name!r}: data nests deeper than [n, 1]")
            flat.extend(part)
        return flat
    if any(isinstance(x, list) for x in data):
        raise InvalidInput(f"input {name!r}: data mixes lists and values")
    return data


# Little-endian, as the Open Inference Protocol lays out raw tensor contents.
_RAW_DTYPES = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}


def raw_values(name: str, datatype: str, shape: Any, raw: bytes) -> list:
    """A tensor's raw contents (gRPC ``raw_input_contents``) as the flat list of values its
    JSON ``data`` would hold, so that ``decode_v2`` checks both forms alike: numeric types
    as numbers, BYTES as the length-prefixed (4-byte little-endian) byte strings. Only the
    byte layout is checked here; names, datatypes, shapes and values are ``decode_v2``'s.
    A datatype no feature accepts yields no values: ``decode_v2`` refuses it by name."""
    if datatype == "BYTES":
        out, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise InvalidInput(f"input {name!r}: raw BYTES contents end inside a length prefix")
            size = int.from_bytes(raw[at : at + 4], "little")
            at += 4
            if at + size > len(raw):
                raise InvalidInput(
                    f"input {name!r}: raw BYTES element of {size} bytes runs past the "
                    f"end of the contents ({len(raw)} bytes)"
                )
            out.append(raw[at : at + size])
            at += size
        return out
    dtype = _RAW_DTYPES.get(datatype)
    if dtype is None:
        return []
    width = np.dtype(dtype).itemsize
    if isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape):
        want = math.prod(shape) * width
        if len(raw) != want:
            raise InvalidInput(
                f"input {name!r}: raw contents hold {len(raw)} bytes; shape {shape} of "
                f"{datatype} needs {want}"
            )
    elif len(raw) % width:
        raise InvalidInput(
            f"input {name!r}: raw contents hold {len(raw)} bytes, not a whole number of "
            f"{datatype} values ({width} bytes each)"
        )
    return np.frombuffer(raw, dtype=dtype).tolist()


def check_outputs(requested: list[str], known: list[str]) -> None:
    """The outputs a V2 request asks for exist (HTTP and gRPC alike)."""
    if len(set(requested)) != len(requested):
        dup = next(n for n in requested if requested.count(n) > 1)
        raise InvalidInput(f"output {_show(dup)} is requested more than once")
    for n in requested:
        if n not in known:
            raise InvalidInput(f"unknown output {_show(n)} requested; this model returns {known}")


def decode_v2(inputs: list, parameters: Any, schema: TabularSchema, max_rows: int) -> Columns:
    """One named input per feature column, shape [n] or [n, 1]; numeric features take a
    numeric datatype (FP32, FP64, INT64, ...), categorical features BYTES. The request's
    ``parameters`` may carry ``timestamp`` (ISO 8601, the event time), as V1's body may."""
    if parameters and "timestamp" in parameters:
        check_timestamp(parameters["timestamp"])
    by_name = {f.name: f for f in schema.features}
    names = [str(getattr(t, "name", "")) for t in inputs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InvalidInput(f"input {_show(dup)} is given more than once")
    _check_names(names, schema, "")
    columns: dict[str, list] = {}
    rows = None
    for t in inputs:
        f = by_name[t.name]
        dtype = str(t.datatype)
        if f.kind == "numeric" and dtype not in NUMERIC_TYPES:
            raise InvalidInput(
                f"input {f.name!r}: numeric feature needs a numeric datatype "
                f"(FP64, FP32, INT64, ...), got {_show(dtype)}"
            )
        if f.kind == "categorical" and dtype != "BYTES":
            raise InvalidInput(
                f"input {f.name!r}: categorical feature needs datatype BYTES, got {_show(dtype)}"
            )
        shape = t.shape
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(isinstance(s, int) and s >= 0 for s in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise InvalidInput(f"input {f.name!r}: shape must be [n] or [n, 1], got {_show(shape)}")
        values = _flatten(t.data, f.name)
        if len(values) != shape[0]:
            raise InvalidInput(f"input {f.name!r}: shape {shape} but {len(values)} values")
        if rows is None:
            rows = shape[0]
            _check_rows(rows, max_rows)
        elif shape[0] != rows:
            raise InvalidInput(f"input {f.name!r}: {shape[0]} rows, other inputs have {rows}")
        columns[f.name] = values
    return to_columns(columns, schema)


def input_types(schema: TabularSchema) -> list[dict]:
    return [{"name": f.name, "datatype": f.datatype, "shape": [-1]} for f in schema.features]


def output_types(schema: TabularSchema, has_rules: bool) -> list[dict]:
    if schema.task == "regression":
        out = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    else:
        out = [
            {"name": "prediction", "datatype": "BYTES", "shape": [-1]},
            {"name": "probability", "datatype": "FP64", "shape": [-1]},
        ]
    if has_rules:
        out.append({"name": "rules_fired", "datatype": "BYTES", "shape": [-1]})
    return out


def v2_outputs(pred: dict[str, np.ndarray], rules_fired: list[list[str]] | None) -> list[dict]:
    """V2 output tensors as JSON dicts (what ``InferResponse.to_rest`` would produce)."""
    import orjson

    if "value" in pred:
        outs = [_tensor("prediction", "FP64", pred["value"].tolist())]
    else:
        outs = [
            _tensor("prediction", "BYTES", [str(x) for x in pred["label"]]),
            _tensor("probability", "FP64", pred["probability"].tolist()),
        ]
    if rules_fired is not None:
        outs.append(
            _tensor("rules_fired", "BYTES", [orjson.dumps(r).decode() for r in rules_fired])
        )
    return outs


def _tensor(name: str, datatype: str, data: list) -> dict:
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}


def v2_request_json(request_id: str, parameters: Any, inputs: list) -> dict:
    """The V2 request as JSON, for the payload log (the collector reads this shape). BYTES
    values that arrived as bytes (gRPC, raw contents) are logged as the strings they are."""
    body: dict[str, Any] = {
        "id": request_id,
        "inputs": [
            {"name": t.name, "shape": t.shape, "datatype": t.datatype, "data": _json_data(t.data)}
            for t in inputs
        ],
    }
    if parameters:
        body["parameters"] = dict(parameters)
    return body


def _json_data(data: Any) -> Any:
    if isinstance(data, list) and any(isinstance(v, bytes) for v in data):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
    return data
