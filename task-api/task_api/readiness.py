"""Readiness: can this instance queue tasks right now? (Liveness is /health, which never asks.)

The answer comes from a get of the task topic with a short timeout, cached for a moment so
a load balancer probing every instance often costs Pub/Sub one call per CACHE_SECONDS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 1.0
CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Readiness:
    """One probe's answer: ready or not, and if not, which error said so."""

    ready: bool
    error_type: str | None = None


class TopicProbe:
    """Runs `check` (raises when the topic is unreachable) at most once per CACHE_SECONDS."""

    def __init__(self, check: Callable[[], None], cache_seconds: float = CACHE_SECONDS) -> None:
        self._check = check
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._last: tuple[float, Readiness] | None = None

    def status(self) -> Readiness:
        """The cached answer if it is fresh, else a new probe's."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            try:
                self._check()
                answer = Readiness(True)
            except Exception as exc:
                log.warning("not ready: task topic unreachable: %s", type(exc).__name__)
                answer = Readiness(False, type(exc).__name__)
            self._last = (time.monotonic(), answer)
            return answer
