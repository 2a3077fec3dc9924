"""Recommendation requests in, ranked items out: V1 and V2 for an ``InteractionsSchema``
(``schema.json`` of a recommender); ``serving.codecs`` picks this codec by the schema's kind.

Requests:

    V1   {"instances": [{"user_id": "196", "k": 10, "exclude_seen": true}, ...]}
         (``k`` defaults to the schema's ``k``, 10; ``exclude_seen`` to true: items the user
         interacted with in the training data are not recommended again)
    V2   {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [N], "data": [...]},
                     {"name": "k", "datatype": "INT32", "shape": [1], "data": [10]},
                     {"name": "exclude_seen", "datatype": "BOOL", "shape": [1], "data": [true]}]}
         (``user_id`` may be INT64 too; ``k`` and ``exclude_seen`` are optional, shape [1]
         for the whole request or [N]; one ``k`` per request: outputs are [N, k] tensors)

A user id is a string or an integer (``196`` and ``"196"`` are the same user). A user the
model does not know gets the popularity fallback, and the response says so.

Responses:

    V1   {"predictions": [{"user_id", "items": [...], "scores": [...], "fallback": false}],
          "model_name", "model_version"}
    V2   outputs prediction (BYTES [N], the top item), items (BYTES [N, k]), scores (FP64
         [N, k]), fallback (BOOL [N]); a row with fewer than k unseen items left is padded
         with item "" and score 0

Bad input (a missing or non-id ``user_id``, ``k`` outside 1..max_k or not an integer,
``exclude_seen`` not a boolean, unknown fields, a malformed body) is
``kserve.errors.InvalidInput``: a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from driftloop.formats import InteractionsSchema
from driftloop.preprocess import Columns
from serving.protocol import _check_rows, _flatten, _show, check_timestamp

USER, K_FIELD, EXCLUDE = "user_id", "k", "exclude_seen"
INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
MAX_ID_LENGTH = 256  # an id longer than this is not an id


def _user(v: Any, where: str) -> str:
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{where}: user_id bytes are not UTF-8") from None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise InvalidInput(
            f"{where}: user_id must be a string or an integer, got {type(v).__name__} {_show(v)}"
        )
    s = str(v)
    if not s or len(s) > MAX_ID_LENGTH:
        raise InvalidInput(f"{where}: user_id must be 1..{MAX_ID_LENGTH} characters")
    return s


def _k(v: Any, schema: InteractionsSchema, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise InvalidInput(f"{where}: k must be an integer, got {_show(v)}")
    if not 1 <= int(v) <= schema.max_k:
        raise InvalidInput(f"{where}: k must be in 1..{schema.max_k}, got {int(v)}")
    return int(v)


def _exclude(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise InvalidInput(f"{where}: exclude_seen must be true or false, got {_show(v)}")
    return v


def _columns(
    users: list[str], ks: list[int], exclude: list[bool], schema: InteractionsSchema
) -> Columns:
    return {
        schema.user: users,
        K_FIELD: np.asarray(ks, np.int64),
        EXCLUDE: np.asarray(exclude, bool),
    }


def decode_v1(body: Any, schema: InteractionsSchema, max_rows: int) -> Columns:
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
        raise InvalidInput('field "instances": expected a list of {"user_id": ...} objects')
    _check_rows(len(instances), max_rows)
    users, ks, exclude = [], [], []
    for i, inst in enumerate(instances):
        where = f"instance {i}"
        if isinstance(inst, str | int) and not isinstance(inst, bool):
            inst = {USER: inst}  # a bare id
        if not isinstance(inst, dict):
            raise InvalidInput(f'{where}: expected {{"user_id": ...}}, got {type(inst).__name__}')
        if unknown := [f for f in inst if f not in (USER, K_FIELD, EXCLUDE)]:
            raise InvalidInput(
                f"{where}: unknown field {_show(unknown[0])}; expected user_id, k, exclude_seen"
            )
        if USER not in inst:
            raise InvalidInput(f"{where}: missing field 'user_id'")
        users.append(_user(inst[USER], where))
        ks.append(_k(inst.get(K_FIELD, schema.k), schema, where))
        exclude.append(_exclude(inst.get(EXCLUDE, True), where))
    return _columns(users, ks, exclude, schema)


def decode_v2(inputs: list, parameters: Any, schema: InteractionsSchema, max_rows: int) -> Columns:
    if parameters and "timestamp" in parameters:
        check_timestamp(parameters["timestamp"])
    by_name: dict[str, Any] = {}
    for t in inputs:
        name = str(getattr(t, "name", ""))
        if name not in (USER, K_FIELD, EXCLUDE):
            raise InvalidInput(
                f"unknown input {_show(name)}; expected user_id (BYTES or INT64 [N]) and "
                "optionally k (INT [1] or [N]) and exclude_seen (BOOL [1] or [N])"
            )
        if name in by_name:
            raise InvalidInput(f"input {name!r} is given more than once")
        by_name[name] = t
    if USER not in by_name:
        raise InvalidInput("missing input 'user_id' (BYTES or INT64 [N])")
    t = by_name[USER]
    if str(t.datatype) != "BYTES" and str(t.datatype) not in INT_TYPES:
        raise InvalidInput(
            f"input 'user_id': datatype must be BYTES or INT64, got {_show(t.datatype)}"
        )
    values = _values(t, USER)
    n = len(values)
    _check_rows(n, max_rows)
    users = [_user(v, f"user_id[{i}]") for i, v in enumerate(values)]

    def per_row(name: str, types: frozenset[str], default: Any, check: Any) -> list:
        if name not in by_name:
            return [default] * n
        tensor = by_name[name]
        if str(tensor.datatype) not in types:
            raise InvalidInput(f"input {name!r}: datatype must be one of {sorted(types)}")
        vals = _values(tensor, name)
        if len(vals) not in (1, n):
            raise InvalidInput(f"input {name!r}: shape [1] or [{n}], got {len(vals)} values")
        checked = [check(v, f"{name}[{i}]") for i, v in enumerate(vals)]
        return checked * n if len(checked) == 1 else checked

    ks = per_row(K_FIELD, INT_TYPES, schema.k, lambda v, w: _k(v, schema, w))
    if len(set(ks)) > 1:
        raise InvalidInput(
            "input 'k': one k per V2 request (outputs are [N, k] tensors); send rows that "
            "want other lengths in their own requests"
        )
    exclude = per_row(EXCLUDE, frozenset({"BOOL"}), True, _exclude)
    return _columns(users, ks, exclude, schema)


def _values(t: Any, name: str) -> list:
    shape = t.shape
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise InvalidInput(f"input {name!r}: shape must be [n] or [n, 1], got {_show(shape)}")
    values = _flatten(t.data, name)
    if not isinstance(shape[0], int) or len(values) != shape[0]:
        raise InvalidInput(f"input {name!r}: shape {shape} but {len(values)} values")
    return values


# -- responses -------------------------------------------------------------------------------
def _rows(pred: dict[str, np.ndarray], users: list[str] | None = None) -> list[dict]:
    out = []
    for j, (items, scores, known) in enumerate(
        zip(pred["items"], pred["scores"], pred["known"], strict=True)
    ):
        keep = [i for i, it in enumerate(items) if it != ""]
        row = {
            "items": [str(items[i]) for i in keep],
            "scores": [round(float(scores[i]), 6) for i in keep],
            "fallback": not bool(known),
        }
        if users is not None:
            row = {"user_id": users[j], **row}
        out.append(row)
    return out


def v1_response(
    model_name: str,
    version: int,
    schema: InteractionsSchema,
    pred: dict[str, np.ndarray],
    columns: Columns | None = None,
) -> dict:
    users = list(columns[schema.user]) if columns is not None else None
    return {
        "model_name": model_name,
        "model_version": str(version),
        "predictions": _rows(pred, users),
    }


def v2_outputs(schema: InteractionsSchema, pred: dict[str, np.ndarray]) -> list[dict]:
    items, scores = pred["items"], pred["scores"]
    n, k = items.shape
    return [
        {
            "name": "prediction",
            "datatype": "BYTES",
            "shape": [n],
            "data": [str(r[0]) if k else "" for r in items],
        },
        {
            "name": "items",
            "datatype": "BYTES",
            "shape": [n, k],
            "data": [str(x) for x in items.ravel()],
        },
        {
            "name": "scores",
            "datatype": "FP64",
            "shape": [n, k],
            "data": scores.ravel().round(6).tolist(),
        },
        {
            "name": "fallback",
            "datatype": "BOOL",
            "shape": [n],
            "data": [not bool(x) for x in pred["known"]],
        },
    ]


def input_types(schema: InteractionsSchema) -> list[dict]:
    """What ``GET /v2/models/<name>`` lists."""
    return [
        {"name": USER, "datatype": "BYTES", "shape": [-1]},
        {"name": K_FIELD, "datatype": "INT32", "shape": [1]},
        {"name": EXCLUDE, "datatype": "BOOL", "shape": [1]},
    ]


def output_types(schema: InteractionsSchema) -> list[dict]:
    return [
        {"name": "prediction", "datatype": "BYTES", "shape": [-1]},
        {"name": "items", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "scores", "datatype": "FP64", "shape": [-1, -1]},
        {"name": "fallback", "datatype": "BOOL", "shape": [-1]},
    ]
