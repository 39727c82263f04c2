"""A task type routed to its own queue, for the queue tests (TASK_MODULES=...,tests.task_modules.urgent)."""

from __future__ import annotations

from taskcore import PermanentTaskError, TaskPayload, task


class Page(TaskPayload):
    who: str = "on-call"
    fail: bool = False


@task("page_someone", queue="urgent", time_limit=30)
def page_someone(ctx, payload: Page) -> None:
    """Pages someone (writes who was paged)."""
    if payload.fail:
        raise PermanentTaskError("nobody answers")
    ctx.outputs.write_json("paged.json", {"who": payload.who})
