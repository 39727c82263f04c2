"""The admin API's view of tasks: recent ones, one in depth, and the last hour at a glance.

Every route costs O(page), whatever the history: recent tasks come from the transition
journal and the hour's counts from the writers' stats (taskcore.journal, task_index), each
shown task from its own record; the backlog comes from Pub/Sub's numbers in Cloud
Monitoring (taskcore.backlog). Nothing here lists status records.
"""

from __future__ import annotations

from datetime import UTC, datetime

import requests
from flask import Blueprint, Response, jsonify, request, url_for
from google.api_core import exceptions as gexc
from google.cloud.storage.retry import DEFAULT_RETRY

from task_api.admin_session import admin_required
from task_api.routes.outputs import output_content, output_listing, succeeded_record
from task_api.routes.status import checked_task_id, read_record, view
from task_api.services import services
from taskcore.backlog import queue_subscriptions
from taskcore.errors import ApiRequestError, InfrastructureError
from taskcore.status import StatusStore, TaskState, TaskStatus
from taskcore.task_index import PageCursor, TaskIndex

bp = Blueprint("tasks", __name__)

DEFAULT_PAGE = 50
MAX_PAGE = 200
READ_TIMEOUT_SECONDS = 5.0
# What the list leaves out of each record: the task's page shows it.
SUMMARY_EXCLUDES = {"revision", "payload", "history", "errors", "outputs", "run"}
# Journal states in the order the hour's chart stacks them, with the names it shows.
ACTIVITY_NAMES = {
    "queued": "submitted",
    "running": "started",
    "succeeded": "succeeded",
    "retrying": "retried",
    "dead_lettered": "dead_lettered",
    "cancelled": "cancelled",
}


def _index() -> TaskIndex:
    api = services()
    store = StatusStore(
        api.clients.bucket,
        retry=DEFAULT_RETRY.with_timeout(READ_TIMEOUT_SECONDS),
        timeout=READ_TIMEOUT_SECONDS,
    )
    return TaskIndex(api.clients.bucket, store.get, api.reads.get(), timeout=READ_TIMEOUT_SECONDS)


def _state(text: str | None) -> TaskState | None:
    if text is None:
        return None
    try:
        return TaskState(text)
    except ValueError:
        allowed = ", ".join(s.value for s in TaskState)
        raise ApiRequestError(f"status must be one of {allowed}", code="invalid_status") from None


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ApiRequestError("limit must be a positive integer", code="invalid_limit")
    return min(number, MAX_PAGE)


def _cursor(text: str | None) -> PageCursor | None:
    if not text:
        return None
    try:
        return PageCursor.decode(text)
    except ValueError as exc:
        raise ApiRequestError(str(exc), code="invalid_cursor") from None


def summary(record: TaskStatus) -> dict:
    """A record as the task list shows it: state and times, not payload or history."""
    return record.model_dump(mode="json", exclude=SUMMARY_EXCLUDES)


def _unavailable(what: str, exc: Exception) -> InfrastructureError:
    return InfrastructureError(f"{what} failed: {type(exc).__name__}: {exc}")


@bp.get("/tasks")
@admin_required
def tasks() -> Response:
    """Recent tasks, newest change first: ?status, ?limit (max 200), ?cursor (next_cursor)."""
    state = _state(request.args.get("status"))
    limit = _limit(request.args.get("limit"))
    cursor = _cursor(request.args.get("cursor"))
    try:
        page = _index().page(state=state, limit=limit, cursor=cursor)
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise _unavailable("the task journal read", exc) from exc
    return jsonify(
        tasks=[summary(record) for record in page.tasks],
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
        scanned_to=page.scanned_to.isoformat() if page.scanned_to else None,
    )


@bp.get("/tasks/<task_id>")
@admin_required
def task(task_id: str) -> Response:
    """One task in depth: its record (payload, attempts, history, errors) and its outputs."""
    record = read_record(checked_task_id(task_id))
    if record is None:
        raise ApiRequestError(f"no task {task_id} is known", status=404, code="task_not_found")
    outputs = []
    if record.state == TaskState.SUCCEEDED:
        outputs = output_listing(
            record,
            lambda name: url_for("admin.tasks.admin_output", task_id=task_id, name=name),
        )["outputs"]
    return jsonify(task=view(record), outputs=outputs)


@bp.get("/tasks/<task_id>/outputs/<path:name>")
@admin_required
def admin_output(task_id: str, name: str) -> Response:
    """One output of a succeeded task, for operators (as GET /tasks/<id>/outputs/<name>)."""
    return output_content(succeeded_record(task_id), name)


@bp.get("/overview")
@admin_required
def overview() -> Response:
    """The last hour per minute, what runs now, and each subscription's backlog."""
    api = services()
    now = datetime.now(UTC)
    try:
        activity = _index().activity(now)
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise _unavailable("the writers' stats read", exc) from exc
    settings = api.settings
    names = {"main": settings.subscription_name, "dlq": settings.dlq_subscription_name}
    queues = queue_subscriptions(settings, api.registry.queues())
    backlog = api.backlog.read([*queues.values(), settings.dlq_subscription_name])
    totals = activity.totals()
    failed = totals["retrying"] + totals["dead_lettered"]
    attempts = failed + totals["succeeded"]
    return jsonify(
        generated_at=now.isoformat(),
        running_now=activity.running_now,
        writers={"seen": activity.writers, "live": activity.live_writers},
        last_hour={
            "by_state": totals,
            "failure_rate": round(failed / attempts, 4) if attempts else None,
        },
        minutes=[
            {
                "minute": minute.isoformat(),
                **{shown: counts.get(state, 0) for state, shown in ACTIVITY_NAMES.items()},
            }
            for minute, counts in activity.minutes
        ],
        backlog={
            "available": backlog.available,
            "source": backlog.source,
            "detail": backlog.detail,
            **{
                role: {
                    "subscription": name,
                    **(backlog.subscriptions[name].as_dict() if backlog.available else {}),
                }
                for role, name in names.items()
            },
            "queues": [
                {
                    "queue": queue,
                    "subscription": name,
                    **(backlog.subscriptions[name].as_dict() if backlog.available else {}),
                }
                for queue, name in queues.items()
            ],
        },
    )
