"""The KServe predictor: a thin ``kserve.Model`` over ``FittedModel.predict``.

The version's family (from its manifest) loads the model; the predictor only decodes,
predicts and encodes, with the codec of its schema's kind (``serving.codecs``: tabular
``serving.protocol``, image ``serving.image_protocol``):

    preprocess   V1 dict / V2 InferRequest -> validated input columns  (the codec)
    predict      FittedModel.predict (the one prediction path) + business rules; with a
                 payload log, predict_logged: the family says what the log keeps
    postprocess  V1 dict / V2 InferResponse; queue the payload log pair; with a shadow
                 version (``serving.shadow``), queue the decoded columns for it to score
                 after the answer is built (logged as ``endpoint: shadow``)

Each request takes the current ``Bundle`` once, in ``preprocess``, and carries it to the
end, so a hot swap (``swap``) never mixes two models in one request. Run it with
``python -m serving --model_dir /mnt/models --model_name NAME`` or ``driftloop serve``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, RequestedOutput
from prometheus_client import Gauge

from driftloop.preprocess import Columns
from serving import protocol
from serving.artifacts import Bundle
from serving.codecs import codec_for, logged_request
from serving.options import DEFAULT_MAX_BATCH_ROWS
from serving.payload_log import PayloadEmitter
from serving.shadow import Shadow

# Which registry version answers requests now: dashboards and the demo watch hot swaps here.
SERVED_VERSION = Gauge("driftloop_served_version", "Registry version being served", ["model"])


@dataclass(frozen=True)
class Batch:
    """preprocess -> predict: the validated rows and everything the response needs."""

    bundle: Bundle
    columns: Columns
    v2: InferRequest | None  # None for V1
    v1_body: dict | None
    request_id: str | None


@dataclass(frozen=True)
class Scored:
    """predict -> postprocess."""

    batch: Batch
    pred: dict[str, np.ndarray]
    rules_fired: list[list[str]] | None
    logged: dict[str, np.ndarray] | None = None  # the family's log columns (None: as sent)


class Predictor(Model):
    def __init__(
        self,
        name: str,
        loader: Callable[[], Bundle],
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        emitter: PayloadEmitter | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        super().__init__(name)
        self._loader, self.max_batch_rows, self.emitter = loader, max_batch_rows, emitter
        self.shadow = shadow
        self._bundle: Bundle | None = None

    # -- model lifecycle ---------------------------------------------------------------
    def load(self) -> bool:
        self.swap(self._loader())
        if self.shadow is not None and not self.shadow.tried:
            # After the champion: a shadow that fails is logged and counted, never fatal.
            self.shadow.load(self.bundle.schema, self._score_shadow)
        return self.ready

    def swap(self, bundle: Bundle) -> None:
        """Serve ``bundle`` from the next request on; in-flight requests keep theirs."""
        self._bundle = bundle  # one reference write: atomic under the GIL
        self.ready = True
        SERVED_VERSION.labels(self.name).set(bundle.version)
        if self.shadow is not None:
            self.shadow.recheck(bundle.schema, bundle.version)

    @property
    def served_version(self) -> int | None:
        """The registry version answering requests now (versioned V2 paths and gRPC
        ``model_version`` must name it)."""
        return None if self._bundle is None else self._bundle.version

    @property
    def bundle(self) -> Bundle:
        if self._bundle is None:
            raise RuntimeError(f"model {self.name!r} is not loaded")
        return self._bundle

    def get_input_types(self) -> list[dict]:
        return codec_for(self.bundle.schema).input_types(self.bundle.schema)

    def get_output_types(self) -> list[dict]:
        b = self.bundle
        return codec_for(b.schema).output_types(b.schema, b.rules is not None)

    # -- request path --------------------------------------------------------------------
    def preprocess(self, payload: dict | InferRequest, headers: dict | None = None) -> Batch:
        bundle = self.bundle
        rid = (headers or {}).get("x-request-id")
        codec = codec_for(bundle.schema)
        if isinstance(payload, InferRequest):
            if payload.request_outputs:
                known = codec.output_types(bundle.schema, bundle.rules is not None)
                protocol.check_outputs(
                    [o.name for o in payload.request_outputs], [o["name"] for o in known]
                )
            columns = codec.decode_v2(
                payload.inputs, payload.parameters, bundle.schema, self.max_batch_rows
            )
            return Batch(bundle, columns, payload, None, rid or payload.id or str(uuid.uuid4()))
        columns = codec.decode_v1(payload, bundle.schema, self.max_batch_rows)
        return Batch(bundle, columns, None, payload, rid)

    def predict(self, batch: Batch, headers: dict | None = None) -> Scored:
        bundle = batch.bundle
        logged = None
        if self.emitter is None:
            pred = bundle.model.predict(batch.columns)
        else:
            pred, logged = bundle.model.predict_logged(batch.columns)
        fired = bundle.rules.evaluate(batch.columns) if bundle.rules is not None else None
        return Scored(batch, pred, fired, logged)

    def postprocess(
        self, scored: Scored, headers: dict | None = None, response_headers: dict | None = None
    ) -> dict | InferResponse:
        batch = scored.batch
        version, schema = batch.bundle.version, batch.bundle.schema
        codec = codec_for(schema)
        logged = scored.logged
        shadow = self.shadow
        if batch.v2 is None:
            body = codec.v1_response(self.name, version, schema, scored.pred, scored.rules_fired)
            v1 = batch.v1_body or {}
            rid = batch.request_id
            if rid is None and shadow is not None and shadow.active:
                rid = str(uuid.uuid4())  # both pairs must carry the same id
            self._log(
                rid,
                lambda: (
                    v1 if logged is None else logged_request(logged, v1.get("timestamp")),
                    body,
                ),
            )
            if shadow is not None:  # the answer is built: the shadow scores later
                shadow.submit((batch, rid), _n_rows(batch.columns))
            return body
        outs = codec.v2_outputs(schema, scored.pred, scored.rules_fired)
        rid = batch.request_id or str(uuid.uuid4())
        v2 = batch.v2
        binary = bool(v2.use_binary_outputs)  # REST: binary_data_output; gRPC: raw in, raw out
        requested = v2.request_outputs
        if requested:  # in the order asked for; each may override binary_data (REST)
            by_name = {o["name"]: o for o in outs}
            outs = [by_name[o.name] for o in requested]
            requested = [
                RequestedOutput(
                    o.name, {"binary_data": binary if o.binary_data is None else o.binary_data}
                )
                for o in requested
            ]
        params = dict(v2.parameters or {})
        self._log(
            rid,
            lambda: (
                protocol.v2_request_json(rid, v2.parameters, v2.inputs)
                if logged is None
                else logged_request(logged, params.get("timestamp")),
                {
                    "id": rid,
                    "model_name": self.name,
                    "model_version": str(version),
                    "outputs": outs,
                },
            ),
        )
        if shadow is not None:
            shadow.submit((batch, rid), _n_rows(batch.columns))
        return InferResponse(
            response_id=rid,
            model_name=self.name,
            model_version=str(version),
            infer_outputs=[
                InferOutput(o["name"], o["shape"], o["datatype"], o["data"]) for o in outs
            ],
            use_binary_outputs=binary,
            requested_outputs=requested,
        )

    def _score_shadow(self, bundle: Bundle, jobs: list[tuple[Batch, str | None]]) -> None:
        """The shadow's thread: score answered requests with the shadow ``bundle`` (in one
        model call when their columns concatenate) and log each one's pair as the
        champion's would be, under its id, ``endpoint: shadow``. Raising is the shadow's
        failure (``serving.shadow`` counts it and tries the jobs one by one); nothing is
        logged until every job of the call is scored, so a retry logs nothing twice."""
        merged = _concat([b.columns for b, _ in jobs]) if len(jobs) > 1 else None
        if merged is None:  # one job, or columns of a kind that does not concatenate
            parts = [(batch.columns, [(batch, rid)], [0]) for batch, rid in jobs]
        else:
            parts = [(merged[0], jobs, merged[1])]
        pairs: list[tuple[str | None, bytes, bytes]] = []
        for columns, group, sizes in parts:
            if self.emitter is None:
                bundle.model.predict(columns)
                if bundle.rules is not None:
                    bundle.rules.evaluate(columns)
                continue
            pred, logged = bundle.model.predict_logged(columns)
            fired = bundle.rules.evaluate(columns) if bundle.rules is not None else None
            if len(group) == 1:
                pairs.append(self._shadow_pair(bundle, *group[0], pred, fired, logged))
                continue
            total, start = sum(sizes), 0
            for (batch, rid), n in zip(group, sizes, strict=True):
                cut = slice(start, start + n)
                start += n
                pairs.append(
                    self._shadow_pair(
                        bundle,
                        batch,
                        rid,
                        _rows(pred, cut, total),
                        None if fired is None else fired[cut],
                        None if logged is None else _rows(logged, cut, total),
                    )
                )
        if self.emitter is not None:
            for rid, req, resp in pairs:
                self.emitter.emit(rid, req, resp, endpoint="shadow")

    def _shadow_pair(
        self,
        bundle: Bundle,
        batch: Batch,
        rid: str | None,
        pred: dict[str, np.ndarray],
        fired: list[list[str]] | None,
        logged: dict[str, np.ndarray] | None,
    ) -> tuple[str | None, bytes, bytes]:
        """The shadow's request/response JSON for one request, as the champion logs its own."""
        codec, version, schema = codec_for(bundle.schema), bundle.version, bundle.schema
        v2 = batch.v2
        if v2 is None:
            v1 = batch.v1_body or {}
            req = v1 if logged is None else logged_request(logged, v1.get("timestamp"))
            resp = codec.v1_response(self.name, version, schema, pred, fired)
        else:
            rid = rid or str(uuid.uuid4())
            params = dict(v2.parameters or {})
            req = (
                protocol.v2_request_json(rid, v2.parameters, v2.inputs)
                if logged is None
                else logged_request(logged, params.get("timestamp"))
            )
            resp = {
                "id": rid,
                "model_name": self.name,
                "model_version": str(version),
                "outputs": codec.v2_outputs(schema, pred, fired),
            }
        return rid, orjson.dumps(req), orjson.dumps(resp)

    def _log(self, request_id: str | None, bodies: Callable[[], tuple[dict, dict]]) -> None:
        if self.emitter is None:
            return
        try:
            req, resp = bodies()
            self.emitter.emit(request_id, orjson.dumps(req), orjson.dumps(resp))
        except Exception:
            self.emitter.count_dropped(2)


def _concat(columns: list[Any]) -> tuple[dict[str, Any], list[int]] | None:
    """Several requests' decoded columns as one (and each one's rows), or None when they
    are not all mappings of the same names to arrays or lists (then they are scored one
    by one)."""
    first = columns[0]
    if not all(isinstance(c, Mapping) and c.keys() == first.keys() for c in columns):
        return None
    merged: dict[str, Any] = {}
    sizes: list[int] = []
    for name in first:
        values = [c[name] for c in columns]
        if all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in values):
            merged[name] = np.concatenate(values)
        elif all(isinstance(v, list) for v in values):
            merged[name] = [x for v in values for x in v]
        else:
            return None
        lengths = [len(v) for v in values]
        if sizes and lengths != sizes:
            return None
        sizes = lengths
    return (merged, sizes) if sizes else None


def _rows(arrays: dict[str, Any], cut: slice, total: int) -> dict[str, Any]:
    """The rows ``cut`` of each per-row array; anything else (a scalar) as it is."""
    return {
        k: v[cut] if isinstance(v, np.ndarray | list) and len(v) == total else v
        for k, v in arrays.items()
    }


def _n_rows(columns: Any) -> int:
    """How many rows decoded columns hold (the shadow's queue is bounded in rows)."""
    try:
        first = next(iter(columns.values())) if isinstance(columns, Mapping) else columns
        return max(1, len(first))
    except (TypeError, StopIteration):
        return 1
