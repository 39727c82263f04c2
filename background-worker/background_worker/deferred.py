"""Deferred callbacks on one thread: run after a delay unless cancelled first."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class DeferredCall:
    """One scheduled callback; cancel() guarantees it will not start afterwards."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self._lock = threading.Lock()
        self._state = "pending"

    def cancel(self) -> bool:
        """Stop the call if it has not started; if it is running, wait until it finishes."""
        with self._lock:
            cancelled = self._state == "pending"
            self._state = "cancelled" if cancelled else self._state
            return cancelled

    def run(self) -> None:
        """Run the callback unless it was cancelled (holding the lock, so cancel() waits)."""
        with self._lock:
            if self._state != "pending":
                return
            self._state = "running"
            try:
                self.fn()
            except Exception:
                log.warning("deferred call failed", exc_info=True)
            finally:
                self._state = "done"


class Deferred:
    """A single timer thread running many DeferredCalls in due order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, DeferredCall]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="deferred", daemon=True)
        self._thread.start()

    def schedule(self, delay: float, fn: Callable[[], None]) -> DeferredCall:
        """Run fn after delay seconds unless the returned call is cancelled first."""
        call = DeferredCall(fn)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), call))
            self._cond.notify()
        return call

    def stop(self) -> None:
        """Stop the thread; calls not yet due never run."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, call = heapq.heappop(self._heap)
            call.run()
