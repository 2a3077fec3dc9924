"""Shadow scoring: a second registry version scores what the champion served, off the
request path; its predictions go to the payload log under the same request id with
``endpoint: shadow``.

    python -m serving ... --shadow_version 4 [--shadow_share 0.25]
    driftloop serve --model bike-sharing --shadow-version 4 [--shadow-share 0.25]

1. At load the shadow version is loaded and verified like the champion (its own files'
   sha256, its family, its rules) and must take the champion's inputs: the same schema
   kind, input columns and feature kinds (image: the same tensor); ``check_compatible``
   refuses any other with one message. A shadow that fails to load is logged and counted
   (``driftloop_shadow_errors_total{stage="load"}``, ``driftloop_shadow_version`` 0); the
   champion serves as if there were no shadow.
2. Each answered request (or the sampled ``share`` of them) is queued *after* its
   response is built: the answer is always the champion's, and its latency does not wait
   for the shadow. One daemon thread, at the lowest CPU priority, scores the queue with
   the decoded columns the champion saw: it lets requests gather for ``linger_s`` and
   scores up to ``max_batch`` of them in one call (``score`` gets the list): most of a
   one-row prediction is the call's fixed cost, so this is what keeps the shadow's cost
   per request small. A full queue (the shadow cannot keep up) skips the request and
   counts it (``driftloop_shadow_skipped_total``; the queue is bounded in requests and
   in rows): the shadow never slows serving down unboundedly.
3. A shadow that raises on a batch is tried again one request at a time; each request
   it raises on is counted (``driftloop_shadow_errors_total{stage="predict"}``) and
   logged at most once every 10 s; the answer was already sent.
4. A hot swap re-checks the shadow against the new champion: one whose inputs no longer
   match is dropped (logged and counted), never half-used; one that became the served
   version (it was promoted) is dropped too, without an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

from driftloop.errors import ConfigError
from driftloop.formats import ImageSchema, InputSchema, TabularSchema
from serving.artifacts import Bundle

log = logging.getLogger(__name__)

SHADOW_VERSION = Gauge(
    "driftloop_shadow_version",
    "Registry version scoring in shadow beside the served one (0: none, or it failed to load)",
    ["model"],
)
SHADOW_ERRORS = Counter(
    "driftloop_shadow_errors",
    "Shadow failures: stage=load (the version did not load or does not fit the champion), "
    "stage=predict (it raised on a request; the answer was the champion's all the same)",
    ["model", "stage"],
)
SHADOW_SCORED = Counter("driftloop_shadow_scored", "Requests the shadow scored", ["model"])
SHADOW_SKIPPED = Counter(
    "driftloop_shadow_skipped",
    "Requests not shadowed: the shadow's queue was full (it cannot keep up)",
    ["model"],
)
# The queue holds at most 10,000 rows (10 full 1,000-row requests: ~10-20 MB of decoded
# columns and request bodies) and 2,000 requests: seconds of single-row traffic at the
# rates one replica serves. Past either the shadow is behind and skips.
DEFAULT_MAX_PENDING_ROWS = 10_000
DEFAULT_MAX_PENDING = 2_000
# Requests gather for 50 ms before the shadow scores them together (its log lags the
# served model's by that much, well within the emitter's own 0.1 s linger); at most 64
# per call keeps one call's rows near the predictor's one-request sweet spot.
DEFAULT_LINGER_S = 0.05
DEFAULT_MAX_BATCH = 64
Job = Any  # the predictor's: what ``score`` needs to predict and log one request


def _lower_priority() -> None:
    """The scorer thread yields the CPU to the request path (Linux: a thread's nice)."""
    with contextlib.suppress(AttributeError, OSError):  # elsewhere: the default priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def check_compatible(champion: InputSchema, shadow: InputSchema, version: int) -> None:
    """ConfigError unless the shadow takes exactly the champion's decoded inputs."""
    if champion.kind != shadow.kind or champion.inputs != shadow.inputs:
        raise ConfigError(
            f"shadow v{version} takes {shadow.kind} inputs {shadow.inputs}, the served model "
            f"{champion.kind} inputs {champion.inputs}: a shadow must accept the same "
            "inputs; pick a version trained on the same features"
        )
    # What else decides the decoded columns: tabular feature kinds; the image tensor.
    mine: object
    theirs: object
    if isinstance(champion, TabularSchema) and isinstance(shadow, TabularSchema):
        mine, theirs = champion.kinds, shadow.kinds
    elif isinstance(champion, ImageSchema) and isinstance(shadow, ImageSchema):
        mine, theirs = champion.input.model_dump(), shadow.input.model_dump()
    else:
        return
    if mine != theirs:
        raise ConfigError(
            f"shadow v{version} reads its inputs as {theirs}, the served model as {mine}: "
            "a shadow must accept the same inputs; pick a version trained on the same "
            "features"
        )


class Shadow:
    """The shadow version of one predictor: its bundle, a bounded queue and one scorer
    thread. ``score(bundle, jobs)`` is the predictor's: it predicts and logs the jobs."""

    def __init__(
        self,
        model: str,
        version: int,
        loader: Callable[[], Bundle],
        share: float = 1.0,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        seed: int | None = None,
        linger_s: float = DEFAULT_LINGER_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"shadow share must be in [0, 1], not {share}")
        self.model, self.version, self.share, self.max_pending = model, version, share, max_pending
        self._loader, self.linger_s, self.max_batch = loader, linger_s, max(1, max_batch)
        self.bundle: Bundle | None = None
        self.error = ""  # why there is no shadow bundle, if it failed
        self.tried = False  # load was called (a reload after an unload does not retry)
        self._score: Callable[[Bundle, list[Job]], None] | None = None
        self._random = random.Random(seed)
        self.max_pending_rows = max_pending_rows
        self._queue: deque[tuple[Bundle, Job, int]] = deque()  # (bundle, job, its rows)
        self._rows = 0
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._warned = 0.0
        SHADOW_VERSION.labels(model).set(0)

    # -- lifecycle ----------------------------------------------------------------------
    def load(self, champion: InputSchema, score: Callable[[Bundle, list[Job]], None]) -> bool:
        """Load the shadow beside a champion with schema ``champion``; False (logged and
        counted, the champion unaffected) if it cannot."""
        self._score, self.tried = score, True
        try:
            bundle = self._loader()
            if bundle.version != self.version:
                raise ConfigError(f"asked for shadow v{self.version}, loaded v{bundle.version}")
            check_compatible(champion, bundle.schema, bundle.version)
        except Exception as e:
            self._fail(f"shadow v{self.version} of {self.model} not loaded: {e}")
            return False
        self.bundle, self.error = bundle, ""
        SHADOW_VERSION.labels(self.model).set(bundle.version)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"shadow-{self.model}", daemon=True
            )
            self._thread.start()
        log.info("%s: shadow v%s scores beside the served model", self.model, bundle.version)
        return True

    def recheck(self, champion: InputSchema, version: int) -> None:
        """A new champion (``version``) was swapped in: keep the shadow only if it still
        fits and is not the served version itself (promoted: nothing left to compare)."""
        bundle = self.bundle
        if bundle is None:
            return
        if bundle.version == version:
            self.bundle = None
            SHADOW_VERSION.labels(self.model).set(0)
            log.info("%s: shadow v%s is now the served version; no shadow", self.model, version)
            return
        try:
            check_compatible(champion, bundle.schema, bundle.version)
        except ConfigError as e:
            self.bundle = None
            self._fail(f"shadow dropped after the served model changed: {e}")

    def _fail(self, message: str) -> None:
        self.error = message
        SHADOW_ERRORS.labels(self.model, "load").inc()
        SHADOW_VERSION.labels(self.model).set(0)
        log.error("%s", message)

    @property
    def active(self) -> bool:
        return self.bundle is not None and self.share > 0

    # -- the request path: never blocks, never raises -------------------------------------
    def submit(self, job: Job, rows: int = 1) -> None:
        """Queue ``job`` (of ``rows`` rows) for the shadow, after the response is built;
        or skip it."""
        bundle = self.bundle
        if bundle is None or self.share <= 0:
            return
        if self.share < 1 and self._random.random() >= self.share:
            return
        with self._cond:
            if (
                self._closing
                or len(self._queue) >= self.max_pending
                or (self._queue and self._rows + rows > self.max_pending_rows)
            ):
                full = True
            else:
                full = False
                self._queue.append((bundle, job, rows))
                self._rows += rows
                self._cond.notify()
        if full:
            SHADOW_SKIPPED.labels(self.model).inc()

    def idle(self) -> bool:
        """Nothing queued and nothing being scored (tests and benchmarks wait on this)."""
        with self._cond:
            return not self._queue and not self._busy

    # -- the scorer thread ------------------------------------------------------------------
    def _run(self) -> None:
        _lower_priority()
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
            if self.linger_s and not self._closing:
                time.sleep(self.linger_s)  # let requests gather; releases the GIL
            with self._cond:
                n = min(len(self._queue), self.max_batch)
                jobs = [self._queue.popleft() for _ in range(n)]
                self._rows -= sum(rows for _, _, rows in jobs)
                self._busy = True
            try:
                self._score_all([(bundle, job) for bundle, job, _ in jobs])
            finally:
                with self._cond:
                    self._busy = False

    def _score_all(self, jobs: list[tuple[Bundle, Job]]) -> None:
        groups: dict[int, tuple[Bundle, list[Job]]] = {}  # a swap mid-batch: two groups
        for bundle, job in jobs:
            groups.setdefault(id(bundle), (bundle, []))[1].append(job)
        assert self._score is not None
        for bundle, group in groups.values():
            try:
                self._score(bundle, group)
                SHADOW_SCORED.labels(self.model).inc(len(group))
                continue
            except Exception as e:
                if len(group) == 1:
                    self._failed(bundle, e)
                    continue
            for job in group:  # which of them does it fail on?
                try:
                    self._score(bundle, [job])
                    SHADOW_SCORED.labels(self.model).inc()
                except Exception as e:
                    self._failed(bundle, e)

    def _failed(self, bundle: Bundle, e: Exception) -> None:
        SHADOW_ERRORS.labels(self.model, "predict").inc()
        if time.monotonic() - self._warned >= 10:  # an outage is a line, not thousands
            self._warned = time.monotonic()
            log.warning(
                "%s: shadow v%s failed on a request (the answer was the served model's): %s: %s",
                self.model,
                bundle.version,
                type(e).__name__,
                e,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued (up to ``timeout``), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
