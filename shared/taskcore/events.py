"""The structured log events the pipeline emits: defined here, and only here.

Each event is one JSON log line whose `event` field holds the value below, plus the fields
EVENT_FIELDS lists for it (Cloud Logging files them under `jsonPayload`). Log-based metrics,
alerts and documented Cloud Logging queries filter on these values and extract these fields;
the infra tests check every such filter and extractor against this module, and run the
worker to check its real lines against it, so a renamed event or field fails the tests
instead of silently blinding an alert.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


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
    Fields: task_id, task_type, delivery_attempt, duration_ms."""

    TASK_RETRIED = "task_retried"
    """The run failed for a reason that may pass; it will run again after a backoff.
    Fields: task_id, task_type, delivery_attempt, error_type, duration_ms."""

    TASK_DEAD_LETTERED = "task_dead_lettered"
    """The task failed for good (a permanent error, or its attempts are used up) and is in the
    dead-letter topic with its reason. Fields: delivery_attempt, error_type, duration_ms, and
    task_id, task_type whenever the message names them (a body that is not JSON does not)."""

    TASK_DUPLICATE = "task_duplicate"
    """A redelivery or duplicate of a task that already ended; acked without running."""

    TASK_CANCELLED = "task_cancelled"
    """The task was cancelled (DELETE /tasks/<id>); acked without running, or stopped."""

    TASK_RELEASED = "task_released"
    """The message went back to the queue without counting against the task: shutdown,
    storage unreachable, or another delivery of the same task holds it."""

    # --- the dispatcher (in the API) ----------------------------------------------------
    TASK_SCHEDULED = "task_scheduled"
    """A delayed task was accepted: it is kept, unpublished, until run_at."""

    PERIODIC_FIRED = "periodic_fired"
    """One firing of a periodic task type was published (its task id names the firing)."""

    EXECUTION_STARTED = "execution_started"
    """The dispatcher started a worker execution for a queue (tasks: its parallel count)."""

    # --- the worker: one line per execution ----------------------------------------------
    EXECUTION_SUMMARY = "execution_summary"
    """What one execution did (counts by outcome, stop reason, duration)."""

    EXECUTION_FAILED = "execution_failed"
    """The execution stopped on infrastructure or configuration (exit code 2 or 3)."""


# Outcomes that mean a task's run failed: the alerting metric counts these.
FAILURE_EVENTS = (Event.TASK_RETRIED, Event.TASK_DEAD_LETTERED)

# Outcomes of an attempt the worker made at a task, each with its duration_ms: the duration
# metric's distribution is built from these.
ATTEMPT_EVENTS = (Event.TASK_SUCCEEDED, *FAILURE_EVENTS)

_TASK = frozenset({"task_id", "task_type", "delivery_attempt"})

# The fields each event's line always carries besides `event`, `message` and `severity`
# (worker lines also carry the Cloud Run execution fields). A metric may extract only these.
EVENT_FIELDS: Mapping[Event, frozenset[str]] = MappingProxyType(
    {
        Event.TASK_ACCEPTED: frozenset({"task_id", "task_type", "message_id"}),
        Event.ADMIN_SIGN_IN_FAILED: frozenset({"client", "reason"}),
        Event.TASK_SUCCEEDED: _TASK | {"duration_ms"},
        Event.TASK_RETRIED: _TASK | {"error_type", "duration_ms"},
        Event.TASK_DEAD_LETTERED: frozenset({"delivery_attempt", "error_type", "duration_ms"}),
        Event.TASK_DUPLICATE: frozenset({"task_id"}),
        Event.TASK_CANCELLED: frozenset({"task_id"}),
        Event.TASK_RELEASED: frozenset({"task_id"}),
        Event.EXECUTION_SUMMARY: frozenset(
            {"received", "processed", "failed", "dead_lettered", "stop_reason", "duration_seconds"}
        ),
        Event.EXECUTION_FAILED: frozenset(),
        Event.TASK_SCHEDULED: frozenset({"task_id", "task_type", "queue", "run_at"}),
        Event.PERIODIC_FIRED: frozenset({"task_id", "task_type", "queue", "scheduled_at"}),
        Event.EXECUTION_STARTED: frozenset(
            {"queue", "job", "execution", "tasks", "concurrency", "backlog", "running"}
        ),
    }
)
