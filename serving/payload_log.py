"""The predictor's own payload logger: the CloudEvents KServe's logger would send.

With ``--logger_url`` (``driftloop serve --logger-url``) every served request produces two
binary-mode CloudEvents 1.0 POSTs to the collector, as KServe's agent does
(kserve/kserve ``pkg/logger/worker.go``, ``handler.go``)::

    ce-specversion: 1.0              ce-type: org.kubeflow.serving.inference.request|response
    ce-id: <request id, same for the pair>   ce-source, ce-time (RFC 3339, UTC)
    ce-inferenceservicename, ce-namespace, ce-component: predictor, ce-endpoint: default|canary
    ce-metadata: {}                  content-type: application/json; body: the JSON payload

Logging never breaks serving: ``emit`` only puts onto a bounded in-memory queue (a full
queue drops the pair); one daemon thread sends with short timeouts. Drops, failures and
sends are Prometheus counters on the server's ``/metrics``.

Differences from KServe's logger: KServe also logs the request of a failed (non-200) call
and takes the id from an incoming ``Ce-Id`` header; here only served requests are logged
(both halves, after the response is built), the id is ``x-request-id``, the V2 ``id`` or a
new UUID, and the bodies are the decoded JSON re-serialised, not the raw bytes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from prometheus_client import Counter

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"

log = logging.getLogger(__name__)

# Module level: prometheus_client's default registry is what kserve serves on /metrics,
# and a metric may be registered only once per process.
DROPPED = Counter(
    "driftloop_payload_events_dropped", "Payload events dropped: queue full", ["model"]
)
FAILED = Counter(
    "driftloop_payload_events_failed",
    "Payload events the collector did not accept (error, timeout, non-2xx)",
    ["model"],
)
SENT = Counter("driftloop_payload_events_sent", "Payload events the collector accepted", ["model"])


@dataclass(frozen=True)
class LoggerConfig:
    url: str
    inference_service: str
    namespace: str = "default"
    endpoint: str = "default"  # "canary" on a canary InferenceService revision
    component: str = "predictor"
    source: str = "driftloop/serving"
    # 10,000 events is ~5,000 requests: minutes of a slow collector at typical rates,
    # a few MB of memory at most for small tabular payloads.
    queue_size: int = 10_000
    # A collector slower than this is treated as down: its events are counted as failed.
    timeout_s: float = 2.0


class PayloadEmitter:
    """Bounded queue + one sender thread. ``emit`` never blocks and never raises."""

    def __init__(self, config: LoggerConfig, model: str) -> None:
        self.config, self.model = config, model
        self._queue: queue.Queue[tuple[dict, bytes] | None] = queue.Queue(config.queue_size)
        self._client = httpx.Client(timeout=httpx.Timeout(config.timeout_s, connect=0.5))
        self._thread = threading.Thread(target=self._run, name=f"payload-log-{model}", daemon=True)
        self._thread.start()

    def emit(self, request_id: str | None, request: bytes, response: bytes) -> str:
        """Queue the request/response pair; returns the ce-id used."""
        rid = request_id or str(uuid.uuid4())
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        try:
            # Room for both halves or neither: a half pair is useless to the collector.
            if self._queue.maxsize - self._queue.qsize() < 2:
                raise queue.Full
            self._queue.put_nowait((self._headers(REQUEST, rid, now), request))
            self._queue.put_nowait((self._headers(RESPONSE, rid, now), response))
        except queue.Full:
            self.count_dropped(2)
        return rid

    def count_dropped(self, n: int) -> None:
        DROPPED.labels(self.model).inc(n)

    def _headers(self, ce_type: str, rid: str, now: str) -> dict:
        c = self.config
        return {
            "ce-specversion": "1.0",
            "ce-type": ce_type,
            "ce-id": rid,
            "ce-source": c.source,
            "ce-time": now,
            "ce-inferenceservicename": c.inference_service,
            "ce-namespace": c.namespace,
            "ce-component": c.component,
            "ce-endpoint": c.endpoint,
            "ce-metadata": "{}",
            "content-type": "application/json",
        }

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            headers, body = item
            try:
                resp = self._client.post(self.config.url, content=body, headers=headers)
                ok = resp.is_success
            except Exception as e:  # noqa: BLE001 - the collector must never take us down
                log.debug("payload log: %s", e)
                ok = False
            (SENT if ok else FAILED).labels(self.model).inc()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to ``timeout``), then stop the thread."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._client.close()
