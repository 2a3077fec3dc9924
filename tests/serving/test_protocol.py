"""Request decoding and response building, without a server."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.errors import InvalidInput

from driftloop.formats import TabularSchema
from serving.protocol import decode_v1, v1_response

SCHEMA = TabularSchema.model_validate(
    {
        "model": "m",
        "task": "regression",
        "target": "y",
        "unknown_category": "bucket",
        "classes": [],
        "features": [
            {"name": "x", "kind": "numeric", "datatype": "FP64"},
            {"name": "c", "kind": "categorical", "datatype": "BYTES", "categories": ["1", "2"]},
        ],
    }
)


def test_decode_v1_types_columns() -> None:
    cols = decode_v1(
        {"instances": [{"x": 1, "c": 2}, [2.5, "zzz"], {"x": None, "c": None}]}, SCHEMA, 10
    )
    assert cols["x"].dtype == "float64" and cols["x"][:2].tolist() == [1.0, 2.5]
    assert np.isnan(cols["x"][2])
    assert list(cols["c"]) == ["2", "zzz", None]  # ints become category strings


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"{}", "JSON object"),
        ({"instances": {}}, "instances"),
        ({"instances": [{"x": 1}]}, "'c'"),
        ({"instances": [{"x": 1, "c": "1"}] * 11}, "too many"),
        ({"instances": [{"x": 1, "c": "1"}], "timestamp": "soon"}, "timestamp"),
        ({"instances": [{"x": 10**400, "c": "1"}]}, "'x'"),
    ],
)
def test_decode_v1_rejects(body: object, needle: str) -> None:
    with pytest.raises(InvalidInput) as e:
        decode_v1(body, SCHEMA, 10)
    assert needle in str(e.value)


def test_v1_response_shapes() -> None:
    reg = v1_response("m", 3, {"value": np.array([1.5])}, None)
    assert reg == {"model_name": "m", "model_version": "3", "predictions": [1.5]}
    clf = v1_response(
        "m", 1, {"label": np.array(["yes"], dtype=object), "probability": np.array([0.7])}, [["r"]]
    )
    assert clf["predictions"] == ["yes"] and clf["probabilities"] == [0.7]
    assert clf["rules_fired"] == [["r"]]
