"""A periodic task type, for the schedule tests (TASK_MODULES=...,tests.task_modules.nightly)."""

from __future__ import annotations

from taskcore import TaskPayload, task


class Report(TaskPayload):
    days: int = 1


@task("nightly_report", schedule="0 3 * * *", timezone="Europe/Paris")
def nightly_report(ctx, payload: Report) -> None:
    """Writes a report of the last `days` days (here: just which firing ran)."""
    ctx.outputs.write_json("report.json", {"task_id": ctx.task_id, "days": payload.days})
