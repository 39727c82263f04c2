"""The job worker: one Cloud Run Job execution drains the task subscription, then exits."""

from __future__ import annotations

__all__ = ["drain_subscription", "run_execution"]


def __getattr__(name: str):
    # Lazy, so importing the package creates no clients and pulls in no Google libraries.
    if name == "drain_subscription":
        from background_worker.worker import drain_subscription

        return drain_subscription
    if name == "run_execution":
        from background_worker.execution import run_execution

        return run_execution
    raise AttributeError(name)
