"""KServe V1 / V2 request and response bodies → log rows (see driftloop/payloads.py).

``check_request`` / ``check_response`` run on the event loop for every event: cheap shape
checks that turn a malformed body into a 400 at once. ``decode_pair`` runs later, in the
flush thread, and builds one row dict per instance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from driftloop.errors import DataError
from driftloop.payloads import feature_column, naive_utc, valid_name


@dataclass(slots=True)
class Event:
    """One half of a logged inference, as received."""

    is_request: bool
    body: dict
    received: float  # time.time() on receipt
    ce_time: str | None
    service: str | None
    namespace: str | None
    endpoint: str
    rows: int = 0  # instances in a request (for the buffer's memory cap)


def check_request(body: dict) -> int:
    """The number of instances in a V1 or V2 request; raises DataError when malformed."""
    inst = body.get("instances")
    if isinstance(inst, list):
        return len(inst)
    inputs = body.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        shape = inputs[0].get("shape")
        if isinstance(shape, list) and shape and isinstance(shape[0], int):
            # Trust the claimed shape no further than the data: it sizes the memory cap.
            data = inputs[0].get("data")
            return max(0, min(shape[0], len(data) if isinstance(data, list) else 1))
    raise DataError("request body has neither an 'instances' list nor V2 'inputs' with shapes")


def check_response(body: dict) -> None:
    if not isinstance(body.get("predictions"), list) and not isinstance(body.get("outputs"), list):
        raise DataError("response body has neither a 'predictions' list nor V2 'outputs'")
    name = body.get("model_name")
    if name is not None and not valid_name(name):
        raise DataError(f"response model_name {name!r} is not a valid name")


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 → naive UTC; None when absent or unparseable (the caller falls back)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return naive_utc(value)
    except ValueError:
        return None


def model_and_version(req: Event, resp: Event) -> tuple[str, int]:
    """The served model: the response's model_name (else the InferenceService) and version."""
    name = resp.body.get("model_name") or req.service or resp.service
    if not valid_name(name):
        raise DataError(f"no usable model name (model_name={name!r})")
    try:
        version = int(resp.body.get("model_version") or 0)
    except (TypeError, ValueError):
        version = 0  # a server that reports no integer version: logged as v0
    return str(name), version


def _v2_columns(inputs: list, order: list[str] | None) -> dict[str, list]:
    """V2 input tensors → {feature: values}: one tensor per feature, or one [n, k] tensor."""
    if len(inputs) == 1 and len(inputs[0].get("shape", [])) == 2 and inputs[0]["shape"][1] > 1:
        t = inputs[0]
        n, k = t["shape"]
        data = _flat(t.get("data", []))
        if order is None or len(order) != k:
            raise DataError(f"a [{n}, {k}] input tensor needs the model's schema feature order")
        return {name: data[j::k] for j, name in enumerate(order)}
    return {str(t.get("name")): _flat(t.get("data", [])) for t in inputs}


def _flat(data: Any) -> list:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [v for part in data for v in _flat(part)]
    return data if isinstance(data, list) else [data]


def _instances(body: dict, order: list[str] | None) -> list[dict]:
    """The request's instances as feature dicts (list-form rows need the schema order)."""
    if "instances" in body:
        out = []
        for inst in body["instances"]:
            if isinstance(inst, dict):
                out.append(inst)
            elif isinstance(inst, list):
                if order is None or len(inst) != len(order):
                    raise DataError(
                        "list-form instances need the model's schema.json "
                        f"({len(inst)} values, schema has {order and len(order)})"
                    )
                out.append(dict(zip(order, inst, strict=True)))
            else:
                raise DataError("an instance must be an object or a list")
        return out
    cols = _v2_columns(body["inputs"], order)
    n = len(next(iter(cols.values()))) if cols else 0
    if any(len(v) != n for v in cols.values()):
        raise DataError("V2 input tensors have different lengths")
    return [{name: vals[i] for name, vals in cols.items()} for i in range(n)]


def _outputs(body: dict) -> tuple[list, list | None, list | None]:
    """(predictions, probabilities or None, rules_fired per row or None)."""
    if "predictions" in body:
        return body["predictions"], body.get("probabilities"), body.get("rules_fired")
    outs = {
        str(o.get("name")): _flat(o.get("data", [])) for o in body["outputs"] if isinstance(o, dict)
    }
    rules = outs.get("rules_fired")
    if rules is not None:  # V2 BYTES: one JSON document per row
        rules = [json.loads(r) if isinstance(r, str) else r for r in rules]
    preds = outs.get("prediction", outs.get("predictions", next(iter(outs.values()), [])))
    return preds, outs.get("probability"), rules


def _float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _value(v: Any, kind: str | None) -> Any:
    if kind == "numeric":
        return _float(v)
    if kind == "categorical":
        return None if v is None else str(v)
    return v  # kind unknown: the batch writer infers it from all values


def decode_pair(
    request_id: str, req: Event, resp: Event, kinds: dict[str, str] | None
) -> tuple[tuple[str, int, str], list[dict]]:
    """((model, version, endpoint), rows) for the request/response pair with ce-id ``request_id``.

    ``kinds`` maps feature → numeric|categorical in schema order (None: model not registered).
    Raises DataError for a pair that cannot be logged (counted as dropped by the caller).
    """
    model, version = model_and_version(req, resp)
    order = list(kinds) if kinds else None
    instances = _instances(req.body, order)
    preds, probs, rules = _outputs(resp.body)
    if len(preds) != len(instances) or (probs is not None and len(probs) != len(preds)):
        raise DataError(f"{len(instances)} instances but {len(preds)} predictions")
    received = datetime.fromtimestamp(req.received, UTC).replace(tzinfo=None)
    given = req.body.get("parameters")
    params: dict = given if isinstance(given, dict) else {}
    event_time = (
        parse_time(req.body.get("timestamp"))
        or parse_time(params.get("timestamp"))
        or parse_time(req.ce_time)
        or received
    )
    base = {
        "request_id": request_id,
        "event_time": event_time,
        "received_at": received,
        "model": model,
        "version": version,
        "endpoint": req.endpoint,
        "inference_service": req.service,
        "namespace": req.namespace,
    }
    rows = []
    for i, inst in enumerate(instances):
        row = dict(base)
        row["row"] = i
        for name, v in inst.items():
            row[feature_column(str(name))] = _value(v, kinds.get(name) if kinds else None)
        pred = preds[i]
        if probs is not None:  # binary classification: the label and P(positive)
            row["prediction"], row["label"] = _float(probs[i]), None if pred is None else str(pred)
        elif isinstance(pred, str):
            row["prediction"], row["label"] = None, pred
        else:
            row["prediction"], row["label"] = _float(pred), None
        row["rules_fired"] = json.dumps(rules[i] if rules is not None and i < len(rules) else [])
        rows.append(row)
    return (model, version, req.endpoint), rows
