"""Follow a registry alias and hot-swap the served model when it moves.

Locally, promotion is an alias write (``Registry.promote``); the server polls the alias
every ``interval`` seconds, builds the new version's ``Bundle`` completely (download,
verify, load) and only then hands it to the predictor's ``swap`` — one reference
assignment, so in-flight requests finish on the old model and none fails. A store that
cannot be read or a version that fails to load is logged and retried on the next tick;
the old model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from driftloop.errors import DriftloopError
from driftloop.registry import Registry, VersionRef
from serving.artifacts import Bundle, load_from_registry

log = logging.getLogger(__name__)


class AliasWatcher:
    def __init__(
        self,
        registry: Registry,
        model: str,
        alias: str,
        current: int,
        on_change: Callable[[Bundle], None],
        interval: float = 2.0,
    ) -> None:
        self.registry, self.model, self.alias = registry, model, alias
        self.current, self.on_change, self.interval = current, on_change, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{model}", daemon=True)

    def start(self) -> AliasWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def poll(self) -> bool:
        """One check; True if the model was swapped."""
        target = self.registry.alias(self.model, self.alias)
        if target is None or target == self.current:
            return False
        bundle = load_from_registry(self.registry, VersionRef(self.model, target))
        self.on_change(bundle)
        log.info(
            "%s: %s moved v%s -> v%s; now serving v%s",
            self.model,
            self.alias,
            self.current,
            target,
            target,
        )
        self.current = target
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except DriftloopError as e:
                log.warning(
                    "%s: cannot follow %s alias (keeping v%s): %s",
                    self.model,
                    self.alias,
                    self.current,
                    e,
                )
            except Exception:
                log.exception("%s: alias watcher error (keeping v%s)", self.model, self.current)
