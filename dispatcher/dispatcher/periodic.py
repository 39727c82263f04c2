"""Periodic tasks: the firings of `@task(schedule=..., timezone=...)` types.

Each firing is a task whose id derives from the task type and the firing's scheduled time
(`cron-<task_type>-<UTC time>`), so a firing delivered twice — a retried Cloud Scheduler
call, the tick catching up on one Cloud Scheduler also made — is one task that runs once.

Misfires coalesce: when firings were missed (nothing ticked: the service was down), the next
tick runs the latest missed firing once, not every one it missed. A schedule seen for the
first time starts from now: nothing before is fired.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from taskcore.tasks import TaskType


def firing_task_id(task_type: str, scheduled_at: datetime) -> str:
    """The task id of one firing: the same for every delivery of that firing."""
    return f"cron-{task_type}-{scheduled_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def latest_firing(task_type: TaskType, now: datetime) -> datetime:
    """The most recent scheduled time at or before now, in UTC."""
    local_now = now.astimezone(ZoneInfo(task_type.timezone))
    # get_prev is strictly before its start: a second past now includes a firing at now.
    fired = croniter(task_type.schedule, local_now + timedelta(seconds=1)).get_prev(datetime)
    return fired.astimezone(UTC)


def due_firing(task_type: TaskType, last_fired: datetime | None, now: datetime) -> datetime | None:
    """The firing to run now (the latest missed one, coalesced), or None when none is due."""
    latest = latest_firing(task_type, now)
    if last_fired is None or latest <= last_fired:
        return None
    return latest
