"""Dispatching after tasks are accepted, in the API process: `DispatchTrigger.poke`.

The first poke for a queue after a quiet spell dispatches on the request's own time, before
the 202 leaves: Cloud Run gives a service CPU only while it serves requests (request-based
billing), so work left for after the response might not run until the next request. Pokes
within DISPATCH_COOLDOWN_SECONDS of it only note their demand; a background thread takes
the next decision once the cooldown has passed (during a burst, requests keep the CPU on).
What a throttled instance still holds is covered by the tick and, last, by the safety-net
execution.

A dispatch that fails (Admin API down, bucket unreachable) is logged and never fails the
submission: the task is already in Pub/Sub.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dispatcher.service import Dispatcher

log = logging.getLogger(__name__)


class DispatchTrigger:
    """Turns accepted tasks into dispatch decisions, rate-limited per queue."""

    def __init__(self, factory: Callable[[], Dispatcher], cooldown_seconds: float) -> None:
        self._factory = factory
        self._dispatcher: Dispatcher | None = None
        self._cooldown = cooldown_seconds
        self._last_attempt: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        # Built in the serving process on first use: gunicorn forks after create_app().
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = self._factory()
                self._thread = threading.Thread(
                    target=self._follow_up, name="dispatch", daemon=True
                )
                self._thread.start()
            return self._dispatcher

    def poke(self, queue: str, count: int = 1) -> None:
        """`count` tasks were queued for `queue`: dispatch now, or soon after the cooldown."""
        dispatcher = self.dispatcher
        dispatcher.note_demand(queue, count)
        now = time.monotonic()
        with self._lock:
            due = now - self._last_attempt.get(queue, float("-inf")) >= self._cooldown
            if due:
                self._last_attempt[queue] = now
        if due:
            self._dispatch(queue)
        self._wake.set()

    def _dispatch(self, queue: str) -> None:
        try:
            self.dispatcher.dispatch(queue)
        except Exception as exc:  # the task is queued whatever happens here
            log.warning("dispatch for queue %s failed: %s", queue, exc)

    def _follow_up(self) -> None:
        """Decide again for queues whose demand is still pending, once their cooldown passed."""
        while not self._stopped.is_set():
            self._wake.wait(timeout=self._cooldown)
            self._wake.clear()
            if self._stopped.is_set():
                return
            for queue in self._dispatcher.pending_queues():
                now = time.monotonic()
                with self._lock:
                    if now - self._last_attempt.get(queue, float("-inf")) < self._cooldown:
                        continue
                    self._last_attempt[queue] = now
                self._dispatch(queue)

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._dispatcher is not None and self._dispatcher.jobs is not None:
            self._dispatcher.jobs.close()
