"""Payload-log events (KServe's CloudEvents, V1 and V2 bodies) -> log rows.

Two steps, shared by the collector and the read path::

    parse_event(attrs, raw, doc, received)  on arrival (the collector's event loop): checks
        the attributes and the body and refuses, with a DataError naming it, anything that
        a later step could trip on: times outside years 1..9999, numbers beyond float64,
        versions beyond int64, malformed tensors. Keeps the body as raw bytes.
    decode_pair(rid, request, response, kinds)  in the collector's flush thread, or in
        ``driftloop.payloads.read_logs`` for halves stored unpaired: one row per instance,
        typed by the served version's schema (``kinds``: feature -> numeric|categorical).

Values are checked by ``driftloop.values``, the functions the predictor validates its
requests with (``serving/protocol.py``): a request the predictor serves is one the
collector logs, and the other way round. What only the pair can tell (as many predictions
as instances; features that match the schema) is checked by ``decode_pair``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from driftloop import values
from driftloop.errors import DataError
from driftloop.formats import ENDPOINTS, LOG_FIELDS, MAX_ID_LENGTH, OUTPUT_FIELDS, valid_name

# KServe's payload-logger CloudEvent types; the predictor's own emitter sends the same,
# batched in CloudEvents' batched content mode.
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
RESERVED = frozenset(LOG_FIELDS) | frozenset(OUTPUT_FIELDS)
# Bytes an Event costs beyond its body (the object, its attribute strings, the dict slot
# that holds it), for the collector's memory bounds. Measured: ~450 with short attributes.
EVENT_OVERHEAD = 600


def feature_column(name: str) -> str:
    return f"feature.{name}" if name in RESERVED else name


@dataclass(slots=True)
class Event:
    """One half of a logged inference, as accepted. The body stays raw bytes: that is
    what the collector's write-ahead log and half-records store, and what its memory
    bounds count; it is parsed again when the pair is decoded."""

    is_request: bool
    raw: bytes
    received: float  # time.time() on receipt
    ce_time: str | None
    service: str | None
    namespace: str | None
    endpoint: str
    rows: int = 0  # a request: its instances
    model: str = ""  # a response: the model it names; a request: its service
    version: int = 0  # a response: the version that answered
    seg: int = -1  # the collector's write-ahead-log segment that holds it (-1: none)
    # A request: the time text its event time comes from ("": the receive time), found
    # on arrival so that storing a half needs no second parse of its body; None: unknown.
    when: str | None = None
    doc: dict | None = None  # the parsed body, kept only while it is being checked

    @property
    def size(self) -> int:
        return len(self.raw) + EVENT_OVERHEAD

    def body(self) -> dict:
        doc = self.doc if self.doc is not None else orjson.loads(self.raw)
        if not isinstance(doc, dict):
            raise DataError("body must be a JSON object")
        return doc


# -- on arrival ----------------------------------------------------------------------------
def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _time(v: Any, where: str) -> datetime:
    try:
        return values.timestamp(v)
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None


def _scalar(v: Any, where: str) -> None:
    """A feature or output value: null, a string or a finite float64 number."""
    if v is None or isinstance(v, str):
        return
    try:
        values.number(v)
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None


def parse_event(
    attrs: Mapping[str, Any], raw: bytes, doc: Any, received: float
) -> tuple[str, Event]:
    """(request id, Event) from one event's attributes and parsed body; DataError naming
    what is wrong otherwise. ``raw`` is the body's JSON bytes, ``doc`` the parsed body."""
    ce_type, rid = attrs.get("type"), attrs.get("id")
    if ce_type != REQUEST and ce_type != RESPONSE:
        raise DataError(f"unknown or missing ce-type {values.show(ce_type)}")
    if not isinstance(rid, str) or not rid:
        raise DataError("missing ce-id (the request id that pairs request and response)")
    if len(rid) > MAX_ID_LENGTH:
        raise DataError(f"ce-id is longer than {MAX_ID_LENGTH} characters")
    endpoint = attrs.get("endpoint") or "default"
    if endpoint not in ENDPOINTS:
        raise DataError(f"unknown ce-endpoint {values.show(endpoint)}; expected one of {ENDPOINTS}")
    ce_time = _text(attrs.get("time"))
    if ce_time is not None:
        _time(ce_time, "ce-time")
    service = _text(attrs.get("inferenceservicename"))
    if service is not None and not valid_name(service):
        raise DataError(f"invalid ce-inferenceservicename {values.show(service)}")
    namespace = _text(attrs.get("namespace"))
    if namespace is not None and len(namespace) > 253:
        raise DataError("ce-namespace is longer than 253 characters")
    if not isinstance(doc, dict):
        raise DataError("body must be a JSON object")
    ev = Event(ce_type == REQUEST, raw, received, ce_time, service, namespace, endpoint)
    if ev.is_request:
        if service is None:
            raise DataError("a request event needs ce-inferenceservicename (its model)")
        ev.rows, ev.model = check_request(doc), service
        ev.when = _time_text(doc, ce_time)
    else:
        name, ev.version = check_response(doc)
        ev.model = name or service or ""
        if not ev.model:
            raise DataError("a response event needs a model_name or ce-inferenceservicename")
    return rid, ev


def check_request(body: dict) -> int:
    """The number of instances in a V1 or V2 request; DataError naming what is malformed."""
    if "timestamp" in body:
        _time(body["timestamp"], 'field "timestamp"')
    params = body.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise DataError('field "parameters": expected an object')
        if "timestamp" in params:
            _time(params["timestamp"], 'field "parameters.timestamp"')
    inst = body.get("instances")
    if isinstance(inst, list):
        for i, x in enumerate(inst):
            if isinstance(x, dict):
                for k, v in x.items():
                    _scalar(v, f"instances[{i}].{k}")
            elif isinstance(x, list):
                for j, v in enumerate(x):
                    _scalar(v, f"instances[{i}][{j}]")
            else:
                raise DataError(f"instances[{i}]: expected an object or a list")
        return len(inst)
    inputs = body.get("inputs")
    if isinstance(inputs, list) and inputs:
        return _check_tensors(inputs, "inputs")
    raise DataError("request body has neither an 'instances' list nor V2 'inputs'")


def _shape(t: dict, where: str) -> list[int]:
    shape = t.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise DataError(f"{where}: shape must be [n] or [n, k], got {values.show(shape)}")
    return shape


def _check_tensors(tensors: list, where: str) -> int:
    """V2 tensors: named, shaped, as many values as the shape says, the same rows; returns
    the rows. An [n, k] tensor (k > 1) is allowed only as the one input."""
    rows, names = None, set()
    for j, t in enumerate(tensors):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise DataError(f"{where}[{j}]: expected a tensor object with a name")
        at = f"{where}[{j}] {t['name']!r}"
        if t["name"] in names:
            raise DataError(f"{at}: given more than once")
        names.add(t["name"])
        shape = _shape(t, at)
        data = _flat(t.get("data"))
        size = shape[0] * (shape[1] if len(shape) == 2 else 1)
        if len(data) != size:
            raise DataError(f"{at}: shape {shape} but {len(data)} values")
        for v in data:
            _scalar(v, at)
        if len(shape) == 2 and shape[1] > 1 and len(tensors) > 1:
            raise DataError(f"{at}: an [n, k] tensor must be the only one")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise DataError(f"{at}: {shape[0]} rows, the other tensors have {rows}")
    return rows or 0


def check_response(body: dict) -> tuple[str | None, int]:
    """(model_name or None, model_version) of a V1 or V2 response; DataError otherwise.
    The version must be an integer the registry can hold: the collector admits only
    registered versions."""
    name = body.get("model_name")
    if name is not None and not valid_name(name):
        raise DataError(f"response model_name {values.show(name)} is not a valid name")
    if body.get("model_version") is None:
        raise DataError("response names no model_version (the registry version that answered)")
    try:
        version = values.integer(body["model_version"], low=1)
    except ValueError as e:
        raise DataError(f"response model_version: {e}") from None
    preds = body.get("predictions")
    if isinstance(preds, list):
        for i, v in enumerate(preds):
            _scalar(v, f"predictions[{i}]")
        probs = body.get("probabilities")
        if probs is not None:
            if not isinstance(probs, list) or len(probs) != len(preds):
                raise DataError("probabilities: expected a list as long as predictions")
            for i, v in enumerate(probs):
                _number_or_null(v, f"probabilities[{i}]")
        rules = body.get("rules_fired")
        if rules is not None:
            if not isinstance(rules, list):
                raise DataError("rules_fired: expected a list per prediction")
            for i, r in enumerate(rules):
                _rules(r, f"rules_fired[{i}]")
        return name, version
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        raise DataError("response body has neither a 'predictions' list nor V2 'outputs'")
    _check_tensors_out(outputs)
    return name, version


def _number_or_null(v: Any, where: str) -> None:
    if isinstance(v, str):
        raise DataError(f"{where}: expected a number, got str {values.show(v)}")
    _scalar(v, where)


def _prediction_tensor(names: list[str]) -> str | None:
    """Which V2 output holds the predictions: ``prediction``, else ``predictions``, else
    the first one (None: no usable tensor)."""
    for name in ("prediction", "predictions"):
        if name in names:
            return name
    return names[0] if names and names[0] != "rules_fired" else None


def _rules(r: Any, where: str) -> list:
    """One row's fired rules: a list of names (V2 sends it as a JSON string)."""
    if isinstance(r, str):
        try:
            r = json.loads(r)
        except ValueError:
            raise DataError(f"{where}: not a JSON list of rule names") from None
    if not isinstance(r, list) or not all(isinstance(x, str) for x in r):
        raise DataError(f"{where}: expected a list of rule names")
    return r


def _check_tensors_out(outputs: list) -> None:
    lengths = {}
    for j, o in enumerate(outputs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise DataError(f"outputs[{j}]: expected a tensor object with a name")
        data = _flat(o.get("data"))
        at = f"outputs[{j}] {o['name']!r}"
        if o["name"] in lengths:
            raise DataError(f"{at}: given more than once")
        if o["name"] == "rules_fired":
            for i, r in enumerate(data):
                _rules(r, f"{at}[{i}]")
        elif o["name"] == "probability":
            for v in data:
                _number_or_null(v, at)
        else:
            for v in data:
                _scalar(v, at)
        lengths[o["name"]] = len(data)
    pred = _prediction_tensor(list(lengths))
    if pred is None:
        raise DataError("outputs: no prediction tensor")
    if "probability" in lengths and lengths["probability"] != lengths[pred]:
        raise DataError(f"outputs: 'probability' and {pred!r} have different lengths")


# -- decoding a pair -----------------------------------------------------------------------
def _flat(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    if data and any(isinstance(x, list) for x in data):
        return [v for part in data for v in _flat(part)]
    return data


def _v2_columns(inputs: list, order: list[str] | None) -> dict[str, list]:
    """V2 input tensors → {feature: values}: one tensor per feature, or one [n, k] tensor."""
    if len(inputs) == 1 and len(inputs[0]["shape"]) == 2 and inputs[0]["shape"][1] > 1:
        t = inputs[0]
        n, k = t["shape"]
        data = _flat(t.get("data", []))
        if order is None or len(order) != k:
            raise DataError(f"a [{n}, {k}] input tensor needs the model's schema feature order")
        return {name: data[j::k] for j, name in enumerate(order)}
    return {str(t["name"]): _flat(t.get("data", [])) for t in inputs}


def _instances(body: dict, order: list[str] | None) -> list[dict]:
    """The request's instances as feature dicts (list-form rows need the schema order)."""
    if "instances" in body:
        out = []
        for inst in body["instances"]:
            if isinstance(inst, dict):
                out.append(inst)
            else:
                if order is None or len(inst) != len(order):
                    raise DataError(
                        "list-form instances need the model's schema.json "
                        f"({len(inst)} values, schema has {order and len(order)})"
                    )
                out.append(dict(zip(order, inst, strict=True)))
        return out
    cols = _v2_columns(body["inputs"], order)
    n = len(next(iter(cols.values()))) if cols else 0
    return [{name: vals[i] for name, vals in cols.items()} for i in range(n)]


def _outputs(body: dict) -> tuple[list, list | None, list | None]:
    """(predictions, probabilities or None, rules_fired per row or None)."""
    if "predictions" in body:
        return body["predictions"], body.get("probabilities"), body.get("rules_fired")
    outs = {str(o["name"]): _flat(o.get("data", [])) for o in body["outputs"]}
    rules = outs.get("rules_fired")
    if rules is not None:  # V2 BYTES: one JSON document per row
        rules = [_rules(r, "rules_fired") for r in rules]
    pred = _prediction_tensor(list(outs))
    return (outs[pred] if pred else []), outs.get("probability"), rules


def _value(v: Any, kind: str | None, name: str) -> Any:
    if v is None or kind is None:
        return v  # kind unknown (no usable schema): the writer infers it from all values
    try:
        return values.number(v) if kind == "numeric" else values.category(v)
    except ValueError as e:
        raise DataError(f"feature {name!r}: {e}") from None


def _time_text(body: dict, ce_time: str | None) -> str:
    params = body.get("parameters")
    for v in (body.get("timestamp"), params.get("timestamp") if params else None, ce_time):
        if isinstance(v, str) and v:
            return v
    return ""


def event_time(req: Event, body: dict | None = None) -> datetime:
    """The logged event time: the request's ``timestamp`` (V1) or ``parameters.timestamp``
    (V2), else the CloudEvent's ``time``, else the receive time; naive UTC."""
    text = req.when if body is None and req.when is not None else None
    if text is None:
        text = _time_text(req.body() if body is None else body, req.ce_time)
    if text:
        return _time(text, "timestamp")
    return datetime.fromtimestamp(req.received, UTC).replace(tzinfo=None)


def decode_pair(
    request_id: str, req: Event, resp: Event, kinds: dict[str, str] | None
) -> tuple[tuple[str, int, str], list[dict]]:
    """((model, version, endpoint), rows) for the request/response pair with ce-id ``request_id``.

    ``kinds`` maps feature → numeric|categorical in schema order (None: no usable schema,
    kinds are inferred). Raises DataError for a pair whose halves do not fit each other
    or the schema (counted as dropped by the caller).
    """
    body = req.body()
    order = list(kinds) if kinds else None
    instances = _instances(body, order)
    preds, probs, rules = _outputs(resp.body())
    if len(preds) != len(instances) or (probs is not None and len(probs) != len(preds)):
        raise DataError(f"{len(instances)} instances but {len(preds)} predictions")
    if kinds is not None:
        for inst in instances:
            if len(inst) != len(kinds) or any(n not in kinds for n in inst):
                missing = [n for n in kinds if n not in inst]
                extra = [n for n in inst if n not in kinds]
                raise DataError(f"features do not match the schema: missing {missing}, {extra=}")
    received = datetime.fromtimestamp(req.received, UTC).replace(tzinfo=None)
    base = {
        "request_id": request_id,
        "event_time": event_time(req, body),
        "received_at": received,
        "model": resp.model,
        "version": resp.version,
        "endpoint": req.endpoint,
        "inference_service": req.service,
        "namespace": req.namespace,
    }
    rows = []
    for i, inst in enumerate(instances):
        row = dict(base)
        row["row"] = i
        for name, v in inst.items():
            row[feature_column(str(name))] = _value(v, kinds.get(name) if kinds else None, name)
        pred = preds[i]
        if probs is not None:  # binary classification: the label and P(positive)
            p = probs[i]
            row["prediction"], row["label"] = None if p is None else float(p), _label(pred)
        elif isinstance(pred, str):
            row["prediction"], row["label"] = None, pred
        elif isinstance(pred, dict | list):  # a ranked list: the family's log columns keep it
            row["prediction"], row["label"] = None, None
        else:
            row["prediction"], row["label"] = None if pred is None else float(pred), None
        row["rules_fired"] = json.dumps(rules[i] if rules is not None and i < len(rules) else [])
        rows.append(row)
    return (resp.model, resp.version, req.endpoint), rows


def _label(v: Any) -> str | None:
    return None if v is None else values.category(v) if not isinstance(v, str) else v
