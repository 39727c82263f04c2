"""The structured log events the pipeline emits: defined here, and only here.

Each event is one JSON log line whose `event` field holds the value below. Log-based
metrics, alerts and documented Cloud Logging queries filter on these values, and the infra
tests check every such filter against this module, so a renamed event fails the tests
instead of silently blinding an alert.
"""

from __future__ import annotations

import enum


class Event(enum.StrEnum):
    """A value of the `event` field of a log line."""

    # --- the API ---------------------------------------------------------------------------
    TASK_ACCEPTED = "task_accepted"
    """A task was published (202); fields: task_id, task_type, message_id."""

    ADMIN_SIGN_IN_FAILED = "admin_sign_in_failed"
    """A dashboard sign-in was refused; fields: client, reason."""

    # --- the worker: one line per message, naming its outcome --------------------------------
    TASK_SUCCEEDED = "task_succeeded"
    """Outputs and the succeeded record are written; the message is acked.
    Fields: task_id, task_type, attempt, duration_ms."""

    TASK_RETRIED = "task_retried"
    """The run failed for a reason that may pass; it will run again after a backoff.
    Fields: task_id, task_type, attempt, error_type, duration_ms."""

    TASK_DEAD_LETTERED = "task_dead_lettered"
    """The task failed for good (a permanent error, or its attempts are used up) and is in the
    dead-letter topic with its reason. Fields: task_id, task_type, attempt, error_type."""

    TASK_DUPLICATE = "task_duplicate"
    """A redelivery or duplicate of a task that already ended; acked without running."""

    TASK_CANCELLED = "task_cancelled"
    """The task was cancelled (DELETE /tasks/<id>); acked without running, or stopped."""

    TASK_RELEASED = "task_released"
    """The message went back to the queue without counting against the task: shutdown,
    storage unreachable, or another delivery of the same task holds it."""

    # --- the worker: one line per execution ----------------------------------------------
    EXECUTION_SUMMARY = "execution_summary"
    """What one execution did (counts by outcome, stop reason, duration)."""

    EXECUTION_FAILED = "execution_failed"
    """The execution stopped on infrastructure or configuration (exit code 2 or 3)."""


# Outcomes that mean a task's run failed: the alerting metric counts these.
FAILURE_EVENTS = (Event.TASK_RETRIED, Event.TASK_DEAD_LETTERED)
