"""GET /tasks/<task_id>: the task's status record (queued, running, succeeded, failed, ...)."""

from __future__ import annotations

import re

import requests
from flask import Blueprint, Response, jsonify
from google.api_core import exceptions as gexc
from google.cloud.storage.retry import DEFAULT_RETRY

from task_api.auth import require_submit_key
from task_api.services import services
from taskcore.envelope import TASK_ID_PATTERN
from taskcore.errors import ApiRequestError, InfrastructureError
from taskcore.status import TaskStatus, status_object_name

bp = Blueprint("status", __name__)

_TASK_ID = re.compile(TASK_ID_PATTERN)
# A status read is on the request path: bounded, so a slow bucket becomes a 503, not a hang.
READ_TIMEOUT_SECONDS = 3.0
_READ_RETRY = DEFAULT_RETRY.with_timeout(READ_TIMEOUT_SECONDS)


@bp.get("/tasks/<task_id>")
@require_submit_key
def task_status(task_id: str) -> tuple[Response, int, dict[str, str]]:
    """The task's status record; 404 when there is none, 400 for an impossible task id."""
    if not _TASK_ID.fullmatch(task_id):
        raise ApiRequestError(
            "task_id must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
            code="invalid_task_id",
            details=[{"field": "task_id", "message": "invalid", "type": "pattern"}],
        )
    api = services()
    record = _read(task_id)
    if record is None:
        # Accepted moments ago by this process, its queued record not written yet.
        record = api.status_writer.pending(task_id)
    if record is None:
        raise ApiRequestError(f"no task {task_id} is known", status=404, code="task_not_found")
    return jsonify(record.model_dump(mode="json")), 200, {"Cache-Control": "no-store"}


def _read(task_id: str) -> TaskStatus | None:
    blob = services().clients.bucket.blob(status_object_name(task_id))
    try:
        data = blob.download_as_bytes(timeout=READ_TIMEOUT_SECONDS, retry=_READ_RETRY)
    except gexc.NotFound:
        return None
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise InfrastructureError(f"status read of {task_id} failed: {type(exc).__name__}") from exc
    return TaskStatus.model_validate_json(data)
