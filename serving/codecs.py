"""The request codec of each input kind: the predictor picks one by its schema's ``kind``.

    tabular   serving/protocol.py         one named input per feature
    image     serving/image_protocol.py   a pixel tensor or encoded images
    interactions  serving/recsys_protocol.py  a user id (and k); ranked items out

A codec decodes V1 and V2 requests into the columns ``FittedModel.predict`` reads, builds
the responses, and says what ``GET /v2/models/<name>`` lists. A new data kind adds its
codec module and one entry in ``CODECS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftloop.formats import InputSchema
from driftloop.preprocess import Columns
from serving import image_protocol, protocol, recsys_protocol

Pred = dict[str, np.ndarray]
Rules = list[list[str]] | None


@dataclass(frozen=True)
class Codec:
    decode_v1: Callable[[Any, Any, int], Columns]  # (body, schema, max rows)
    decode_v2: Callable[[list, Any, Any, int], Columns]  # (inputs, parameters, schema, max)
    v1_response: Callable[[str, int, Any, Pred, Rules], dict]  # (name, version, schema, ..)
    v2_outputs: Callable[[Any, Pred, Rules], list[dict]]  # (schema, prediction, rules fired)
    input_types: Callable[[Any], list[dict]]
    output_types: Callable[[Any, bool], list[dict]]  # (schema, has rules)


CODECS: dict[str, Codec] = {
    "tabular": Codec(
        decode_v1=protocol.decode_v1,
        decode_v2=protocol.decode_v2,
        v1_response=lambda name, v, schema, pred, rules: protocol.v1_response(name, v, pred, rules),
        v2_outputs=lambda schema, pred, rules: protocol.v2_outputs(pred, rules),
        input_types=protocol.input_types,
        output_types=protocol.output_types,
    ),
    "image": Codec(
        decode_v1=image_protocol.decode_v1,
        decode_v2=image_protocol.decode_v2,
        v1_response=lambda name, v, schema, pred, rules: image_protocol.v1_response(
            name, v, schema, pred
        ),
        v2_outputs=lambda schema, pred, rules: image_protocol.v2_outputs(schema, pred),
        input_types=image_protocol.input_types,
        output_types=lambda schema, has_rules: image_protocol.output_types(schema),
    ),
    "interactions": Codec(
        decode_v1=recsys_protocol.decode_v1,
        decode_v2=recsys_protocol.decode_v2,
        v1_response=lambda name, v, schema, pred, rules: recsys_protocol.v1_response(
            name, v, schema, pred
        ),
        v2_outputs=lambda schema, pred, rules: recsys_protocol.v2_outputs(schema, pred),
        input_types=recsys_protocol.input_types,
        output_types=lambda schema, has_rules: recsys_protocol.output_types(schema),
    ),
}


def codec_for(schema: InputSchema) -> Codec:
    return CODECS[schema.kind]


def logged_request(logged: dict[str, np.ndarray], timestamp: Any) -> dict:
    """The request as the payload log keeps it when the family chose its log columns
    (``FittedModel.predict_logged``): V1 instances of those columns, so the collector
    writes them as it writes any V1 request, and the request's ``timestamp`` (event time)."""
    names = list(logged)
    rows = np.column_stack([np.asarray(logged[n], dtype=object) for n in names]).tolist()
    body: dict[str, Any] = {"instances": [dict(zip(names, r, strict=True)) for r in rows]}
    if timestamp is not None:
        body["timestamp"] = timestamp
    return body
