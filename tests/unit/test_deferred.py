"""Deferred calls run after their delay, never after cancel() returns."""

from __future__ import annotations

import threading
import time

from background_worker.deferred import Deferred


def test_call_runs_after_its_delay_unless_cancelled():
    deferred = Deferred()
    ran = []
    try:
        deferred.schedule(0.05, lambda: ran.append("late"))
        cancelled = deferred.schedule(0.05, lambda: ran.append("cancelled"))
        assert cancelled.cancel() is True
        time.sleep(0.3)
    finally:
        deferred.stop()
    assert ran == ["late"]


def test_cancel_waits_for_a_running_call_so_nothing_lands_after_it():
    deferred = Deferred()
    started, events = threading.Event(), []

    def slow_write():
        started.set()
        time.sleep(0.2)
        events.append("running-write")

    try:
        call = deferred.schedule(0.0, slow_write)
        started.wait(2)
        assert call.cancel() is False
        events.append("final-write")
    finally:
        deferred.stop()
    assert events == ["running-write", "final-write"]
