"""GET /tasks/<task_id>: the task's status record; DELETE /tasks/<task_id>: cancel it."""

from __future__ import annotations

import re

import requests
from flask import Blueprint, Response, jsonify
from google.api_core import exceptions as gexc
from google.cloud.storage.retry import DEFAULT_RETRY

from task_api.auth import require_submit_key
from task_api.services import services
from taskcore.envelope import TASK_ID_PATTERN
from taskcore.errors import ApiRequestError, InfrastructureError, StatusConflictError
from taskcore.lifecycle import request_cancel
from taskcore.status import StatusStore, TaskState, TaskStatus, status_object_name, utcnow

bp = Blueprint("status", __name__)

_TASK_ID = re.compile(TASK_ID_PATTERN)
# A status read is on the request path: bounded, so a slow bucket becomes a 503, not a hang.
READ_TIMEOUT_SECONDS = 3.0
_READ_RETRY = DEFAULT_RETRY.with_timeout(READ_TIMEOUT_SECONDS)


def checked_task_id(task_id: str) -> str:
    """task_id, or a 400 when it cannot be a task id."""
    if not _TASK_ID.fullmatch(task_id):
        raise ApiRequestError(
            "task_id must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
            code="invalid_task_id",
            details=[{"field": "task_id", "message": "invalid", "type": "pattern"}],
        )
    return task_id


def view(record: TaskStatus) -> dict:
    """A status record as the API shows it (without the write bookkeeping)."""
    return record.model_dump(mode="json", exclude={"revision"})


@bp.get("/tasks/<task_id>")
@require_submit_key
def task_status(task_id: str) -> tuple[Response, int, dict[str, str]]:
    """The task's status record; 404 when there is none, 400 for an impossible task id."""
    record = read_record(checked_task_id(task_id))
    if record is None:
        raise ApiRequestError(f"no task {task_id} is known", status=404, code="task_not_found")
    return jsonify(view(record)), 200, {"Cache-Control": "no-store"}


@bp.delete("/tasks/<task_id>")
@require_submit_key
def cancel_task(task_id: str) -> tuple[Response, int, dict[str, str]]:
    """Cancel a task: 200 cancelled (it had not started), 202 (it runs, and is asked to stop
    at its next check), 409 when it already finished, 404 when unknown."""
    api = services()
    store = StatusStore(
        api.clients.bucket,
        retry=_READ_RETRY,
        timeout=READ_TIMEOUT_SECONDS,
        on_written=api.journal.written,
    )
    try:
        done = store.transition(checked_task_id(task_id), request_cancel(utcnow()))
    except (gexc.GoogleAPIError, requests.RequestException, StatusConflictError) as exc:
        raise InfrastructureError(f"cancel of {task_id} failed: {type(exc).__name__}") from exc
    if done.refused and done.refusal.reason == "not_found":
        raise ApiRequestError(f"no task {task_id} is known", status=404, code="task_not_found")
    if done.refused:
        raise ApiRequestError(
            f"task {task_id} already finished ({done.record.state}); nothing to cancel",
            status=409,
            code="task_finished",
            details=[{"task_id": task_id, "state": str(done.record.state)}],
        )
    record = done.record
    status = 200 if record.state == TaskState.CANCELLED else 202
    return jsonify(view(record)), status, {"Cache-Control": "no-store"}


def read_record(task_id: str) -> TaskStatus | None:
    """The task's record, None when there is none; a slow or failing bucket is a 503."""
    blob = services().clients.bucket.blob(status_object_name(task_id))
    try:
        data = blob.download_as_bytes(timeout=READ_TIMEOUT_SECONDS, retry=_READ_RETRY)
    except gexc.NotFound:
        return None
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise InfrastructureError(f"status read of {task_id} failed: {type(exc).__name__}") from exc
    return TaskStatus.model_validate_json(data)
