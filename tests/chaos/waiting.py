"""Polling helpers: wait for a condition with a deadline instead of sleeping and hoping."""

from __future__ import annotations

import time


def wait_until(predicate, what: str, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Return once predicate() is true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def eventually(call, timeout: float = 10.0, interval: float = 0.05):
    """call() until it returns something truthy without raising; its last error after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = call()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        else:
            if time.monotonic() > deadline:
                raise AssertionError(f"{call} returned {result!r} until the timeout")
        time.sleep(interval)
