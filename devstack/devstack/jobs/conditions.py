"""An execution's conditions (Completed, ResourcesAvailable, Started) as Cloud Run reports them.

Completed is the one callers read: reconciling while tasks run (with reason CANCELLING once
cancelled), then succeeded, or failed with reason NON_ZERO_EXIT_CODE (the first task that
failed for good, in Cloud Run's words) or CANCELLED.
"""

from __future__ import annotations

import time

from devstack.jobs import wire as w
from devstack.jobs.supervisor import Progress


def _condition(type_: str, state, message: str = "", reason=None, severity=None):
    condition = w.Condition(type_=type_, state=state, message=message)
    if reason is not None:
        condition.execution_reason = reason
    if severity is not None:
        condition.severity = severity
    return condition


def _completed(execution, progress: Progress):
    if not progress.done:
        if progress.cancelling:
            return _condition(
                "Completed",
                w.State.CONDITION_RECONCILING,
                "The execution is being cancelled.",
                w.ExecutionReason.CANCELLING,
            )
        finished = progress.succeeded + progress.failed + progress.cancelled
        return _condition(
            "Completed",
            w.State.CONDITION_RECONCILING,
            f"{finished} / {execution.task_count} tasks complete.",
        )
    if progress.cancelling:
        return _condition(
            "Completed",
            w.State.CONDITION_FAILED,
            "The execution was cancelled.",
            w.ExecutionReason.CANCELLED,
            w.Severity.ERROR,
        )
    if progress.failed or progress.failure:
        return _condition(
            "Completed",
            w.State.CONDITION_FAILED,
            progress.failure or "Execution failed.",
            w.ExecutionReason.NON_ZERO_EXIT_CODE,
            w.Severity.ERROR,
        )
    seconds = progress.completion_time - (progress.start_time or progress.completion_time)
    return _condition(
        "Completed",
        w.State.CONDITION_SUCCEEDED,
        f"Execution completed successfully in {seconds:.2f}s.",
    )


def execution_conditions(execution, progress: Progress) -> list:
    """The conditions for execution at progress; unchanged ones keep their transition time."""
    started = progress.start_time is not None
    conditions = [
        _completed(execution, progress),
        _condition(
            "ResourcesAvailable", w.State.CONDITION_SUCCEEDED, "Provisioned imported containers."
        ),
        _condition(
            "Started",
            w.State.CONDITION_SUCCEEDED if started else w.State.CONDITION_PENDING,
            "Started deployed execution." if started else "Waiting for a task to start.",
        ),
    ]
    previous = {c.type_: c for c in execution.conditions}
    now = w.timestamp(time.time())
    for condition in conditions:
        before = previous.get(condition.type_)
        unchanged = (
            before is not None
            and before.state == condition.state
            and before.execution_reason == condition.execution_reason
        )
        condition.last_transition_time.CopyFrom(before.last_transition_time if unchanged else now)
    return conditions
