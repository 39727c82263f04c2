"""Delayed tasks: `delay_seconds` or `run_at` on a submission holds the task until it is due.

A delayed task is not published. Its message is kept in the bucket (taskcore.schedule) and
its status record says `scheduled` with its `run_at`; the dispatcher's tick publishes it once
due (never before), or drops it if it was cancelled meanwhile. Both survive any restart.

Caps: a task is held at most MAX_DELAY_SECONDS (30 days, as Cloud Tasks allows). A run_at
in the past, or a delay of 0, runs the task now.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc

from task_api.services import ApiServices
from taskcore.envelope import TaskEnvelope
from taskcore.errors import ApiRequestError, InfrastructureError
from taskcore.events import Event
from taskcore.lifecycle import Delivery, scheduled
from taskcore.schedule import ScheduleStore
from taskcore.status import utcnow

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 30 * 24 * 3600
DELAY_FIELDS = ("delay_seconds", "run_at")


def _refuse(field: str, message: str, kind: str) -> ApiRequestError:
    return ApiRequestError(
        f"{field}: {message}",
        code="invalid_schedule",
        details=[{"field": field, "message": message, "type": kind}],
    )


def take_run_at(fields: dict[str, Any], now: datetime | None = None) -> datetime | None:
    """Remove delay_seconds / run_at from a task's fields; when the task is due (None: now)."""
    delay = fields.pop("delay_seconds", None)
    run_at = fields.pop("run_at", None)
    if delay is None and run_at is None:
        return None
    if delay is not None and run_at is not None:
        raise _refuse("run_at", "give delay_seconds or run_at, not both", "conflict")
    now = now or utcnow()
    if delay is not None:
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
        ):
            raise _refuse("delay_seconds", "must be a number of seconds", "number_type")
        if not 0 <= delay <= MAX_DELAY_SECONDS:
            raise _refuse(
                "delay_seconds", f"must be between 0 and {MAX_DELAY_SECONDS} (30 days)", "range"
            )
        due = now + timedelta(seconds=delay)
    else:
        if not isinstance(run_at, str):
            raise _refuse("run_at", "must be an RFC 3339 time with its offset", "datetime_type")
        try:
            due = datetime.fromisoformat(run_at.replace("Z", "+00:00"))
        except ValueError:
            raise _refuse(
                "run_at", "is not an RFC 3339 time (e.g. 2026-12-01T03:00:00Z)", "datetime_parsing"
            ) from None
        if due.tzinfo is None:
            raise _refuse("run_at", "needs a time zone offset (Z or +01:00)", "timezone_naive")
        if due - now > timedelta(seconds=MAX_DELAY_SECONDS):
            raise _refuse("run_at", "is more than 30 days ahead", "range")
    return due.astimezone(UTC) if due > now else None


def schedule_task(api: ApiServices, envelope: TaskEnvelope, run_at: datetime) -> None:
    """Keep the task until run_at and write its `scheduled` record.

    The kept message comes first: once it exists the task will run, whatever happens next
    (a record that could not be written is written by the worker). InfrastructureError (503)
    when the message could not be kept.
    """
    data, attributes = envelope.to_message()
    store = ScheduleStore(api.clients.bucket)
    try:
        store.add_task(run_at, envelope.queue, envelope.task_id, data, attributes)
    except gexc.GoogleAPIError as exc:
        raise InfrastructureError(f"the delayed task could not be kept: {exc}") from exc
    delivery = Delivery(
        task_id=envelope.task_id,
        task_type=envelope.task_type,
        message_id="",
        queue=envelope.queue,
        submitted_at=envelope.submitted_at,
        payload=envelope.payload,
    )
    try:
        api.status_store.create(scheduled(delivery, run_at, utcnow()))
    except Exception as exc:
        log.warning(
            "scheduled status record not written",
            extra={"json_fields": {"task_id": envelope.task_id, "error_type": type(exc).__name__}},
        )
    log.info(
        "task scheduled",
        extra={
            "json_fields": {
                "event": Event.TASK_SCHEDULED,
                "task_id": envelope.task_id,
                "task_type": envelope.task_type,
                "queue": envelope.queue,
                "run_at": run_at.isoformat(),
            }
        },
    )


def scheduled_body(envelope: TaskEnvelope, run_at: datetime) -> dict[str, Any]:
    """The 202 body of a delayed task: no message yet."""
    return {
        "task_id": envelope.task_id,
        "message_id": None,
        "status": "scheduled",
        "task_type": envelope.task_type,
        # As status records write times (pydantic): UTC, with Z.
        "run_at": run_at.isoformat().replace("+00:00", "Z"),
    }
