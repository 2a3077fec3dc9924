"""What the collector admits: parsed events, a bearer token, registered models only.

``parse_batch``: a CloudEvents batch -> ``(accepted, rejected)`` events
(``driftloop.decode.parse_event`` checks each one alone).

``Auth``: with a token configured (``collector_token`` / ``--token-file``), ``POST /``
and ``POST /labels`` need ``Authorization: Bearer <token>`` (401 without, 403 if wrong);
``/healthz`` and ``/metrics`` stay open. KServe's own payload logger cannot send a header,
so ``open_events`` admits binary-mode events (KServe's form) without one; batched events
(driftloop's emitter) and labels still need it. With no token the collector admits anyone
who can reach it and says so at start: for one machine, not for a cluster.

``Admission``: an event is admitted only for a model with a committed registry version
(a request: its ``ce-inferenceservicename``; a response: its ``model_name`` and the
``model_version`` that answered, which must be committed); labels only for a registered
model. Lookups are cached (a committed version never changes: forever; an unknown
name for 2 s, so a flood of bogus names costs one store lookup per name per 2 s) and run
in a worker thread, off the event loop. A version's schema kinds are cached with it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import SecretStr

from driftloop.decode import Event, parse_event
from driftloop.errors import DataError, IntegrityError, NotFound
from driftloop.formats import VersionFiles, parse_schema
from driftloop.registry import Registry, VersionRef
from driftloop.store import Store

log = logging.getLogger("driftloop.collector")
Key = tuple[str, int]  # (model, version); version 0: "any committed version"
Parsed = tuple[int, str, Event]  # (index in the post, request id, event)
Rejected = tuple[int, int, str, Any]  # (index, HTTP status, message, the event's id)


def parse_batch(body: bytes) -> tuple[list[Parsed], list[Rejected]]:
    """CloudEvents batched mode: a JSON array of structured events, attributes as keys
    and the payload under ``data``. Each event stands or falls alone; both halves of a
    pair in one batch are also decoded together, so a pair that does not fit its
    schema is refused when it arrives, not dropped at flush (``Collector._admit``)."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise DataError(f"batch is not valid JSON: {e}") from None
    if not isinstance(items, list):
        raise DataError("a CloudEvents batch must be a JSON array of event objects")
    now = time.time()
    events: list[Parsed] = []
    rejected: list[Rejected] = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise DataError("an event must be a JSON object")
            doc = item.get("data")
            rid, ev = parse_event(item, orjson.dumps(doc), doc, now)
            ev.doc = doc  # kept until the pair check below
            events.append((i, rid, ev))
        except DataError as e:
            ident = item.get("id") if isinstance(item, dict) else None
            rejected.append((i, 400, f"event {i}: {e}", ident))
    return events, rejected


class Auth:
    def __init__(self, token: SecretStr | None, open_events: bool = False) -> None:
        self.token = token.get_secret_value().encode() if token is not None else None
        self.open_events = open_events

    def check(self, given: bytes | None, binary_event: bool) -> int:
        """0 if the ``Authorization`` header value ``given`` admits the post, else the
        HTTP status: 401 (none) or 403 (a wrong one)."""
        if self.token is None:
            return 0
        if given is None:
            return 0 if binary_event and self.open_events else 401
        scheme, _, value = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
            return 403
        return 0


class Admission:
    """Committed registry versions (and their feature kinds), cached."""

    def __init__(self, store: Store, miss_ttl_s: float = 2.0, max_misses: int = 10_000) -> None:
        self.registry = Registry(store)
        self.miss_ttl_s, self.max_misses = miss_ttl_s, max_misses
        self._known: set[Key] = set()
        self._misses: dict[Key, float] = {}  # key -> monotonic time it was looked up
        self._kinds: dict[Key, dict[str, str] | None] = {}
        self._inflight: dict[Key, asyncio.Future[bool]] = {}

    def cached(self, key: Key) -> bool | None:
        """True/False if known, None if the store must be asked (``lookup``)."""
        if key in self._known:
            return True
        t = self._misses.get(key)
        if t is not None and time.monotonic() - t < self.miss_ttl_s:
            return False
        return None

    async def admit(self, keys: Iterable[Key]) -> dict[Key, bool]:
        """Each key's verdict; looks up those not cached in a worker thread (StoreError
        propagates: the caller answers 503)."""
        out, wanted = {}, []
        for key in set(keys):
            hit = self.cached(key)
            if hit is None:
                wanted.append(key)
            else:
                out[key] = hit
        for key in wanted:
            fut = self._inflight.get(key)
            if fut is None:  # one lookup per key however many requests wait for it
                fut = asyncio.get_running_loop().create_future()
                self._inflight[key] = fut
                try:
                    fut.set_result(await asyncio.to_thread(self.lookup, key))
                except BaseException as e:
                    fut.set_exception(e)
                    fut.exception()  # retrieved here: waiters re-raise it
                finally:
                    del self._inflight[key]
            out[key] = await asyncio.shield(fut)
        return out

    def lookup(self, key: Key) -> bool:
        """Ask the store (blocking); caches the answer and, for a version, its kinds."""
        model, version = key
        if version == 0:
            ok = bool(self.registry.versions(model))
        else:
            ref = VersionRef(model, version)
            ok = self.registry.is_committed(ref)
            if ok:
                self._kinds[key] = self._read_kinds(ref)
        if ok:
            self._known.add(key)
            self._misses.pop(key, None)
        else:
            if len(self._misses) >= self.max_misses:
                self._misses.clear()
            self._misses[key] = time.monotonic()
        return ok

    def kinds(self, model: str, version: int) -> dict[str, str] | None:
        """Feature -> kind in schema order of an admitted version (blocking on a miss:
        call from a worker thread). None: the version has no usable schema.json."""
        key = (model, version)
        if key not in self._kinds:
            self._kinds[key] = self._read_kinds(VersionRef(model, version))
        return self._kinds[key]

    def cached_kinds(self, model: str, version: int) -> dict[str, str] | None:
        return self._kinds.get((model, version))

    def _read_kinds(self, ref: VersionRef) -> dict[str, str] | None:
        try:
            doc = self.registry.read_file(ref, VersionFiles.SCHEMA)
            kinds: dict[str, str] = parse_schema(doc, f"{ref}/{VersionFiles.SCHEMA}").kinds
            return kinds
        except (NotFound, IntegrityError) as e:
            log.warning("no usable schema.json for %s (%s); inferring kinds", ref, e)
            return None
