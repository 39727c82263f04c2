"""POST /submit-tasks: up to MAX_BATCH_TASKS tasks in one request, each judged on its own.

Every item is validated independently; the valid ones are published together (all handed to
the publisher's batcher before any is waited for), so a batch costs about one publish round
trip. The answer lists one result per item, in order:

- 202 when every item was queued;
- 207 when some were queued and some not (a `rejected` item is invalid and must be fixed; a
  `failed` item was valid but Pub/Sub did not confirm it, so sending it again is useful);
- 400 `nothing_queued` when every item was rejected (the per-item results are its details);
- 503 with Retry-After when nothing was queued because Pub/Sub is unavailable.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from task_api import idempotency
from task_api.auth import require_submit_key
from task_api.errors import RETRY_AFTER_SECONDS, RetryLaterError
from task_api.request_body import check_json_values, json_object, refuse_unknown_fields
from task_api.schemas import MAX_BATCH_TASKS
from task_api.services import services
from task_api.submission import accepted, prepare_task, split_task_type
from taskcore.envelope import TaskEnvelope
from taskcore.errors import ApiRequestError, InvalidTaskError

log = logging.getLogger(__name__)

bp = Blueprint("batches", __name__)


@bp.post("/submit-tasks")
@require_submit_key
def submit_tasks() -> tuple[Response, int, dict[str, str]]:
    """Queue {"tasks": [{task_type, ...fields}, ...]}; per-item results, in order."""
    if idempotency.HEADER in request.headers:
        # Silently ignoring the header would let a client believe its retries are safe.
        raise ApiRequestError(
            f"{idempotency.HEADER} is not supported on batches; send tasks one by one "
            "to /submit-task with a key each",
            code="idempotency_not_supported",
        )
    api = services()
    items = _tasks_of(json_object(check_values=False))
    results: list[dict[str, Any] | None] = [None] * len(items)
    ready: list[tuple[int, TaskEnvelope]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ApiRequestError("each task must be a JSON object", code="not_an_object")
            check_json_values(item)
            task_type, fields = split_task_type(api, item)
            ready.append((index, prepare_task(api, task_type, fields)))
        except (ApiRequestError, InvalidTaskError) as exc:
            results[index] = _item_error(index, "rejected", exc)
    if ready:
        outcomes = api.clients.publisher.publish_tasks([envelope for _, envelope in ready])
        for (index, envelope), outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, str) and outcome:
                results[index] = {"index": index, **accepted(api, envelope, outcome)}
            elif isinstance(outcome, InvalidTaskError):
                results[index] = _item_error(index, "rejected", outcome)
            else:
                results[index] = _unavailable(index, outcome)
    return _answer(results)


def _tasks_of(body: dict[str, Any]) -> list[Any]:
    """The body's task list, or a 400 that says what is wrong with it."""
    refuse_unknown_fields(body, {"tasks"}, 'the body is {"tasks": [...]}')
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not 1 <= len(tasks) <= MAX_BATCH_TASKS:
        raise ApiRequestError(
            f"tasks must be a list of 1 to {MAX_BATCH_TASKS} task objects",
            code="schema_violation",
            details=[
                {
                    "field": "tasks",
                    "message": f"a list of 1 to {MAX_BATCH_TASKS} objects",
                    "type": "list_type" if not isinstance(tasks, list) else "too_long",
                }
            ],
        )
    return tasks


def _item_error(index: int, status: str, exc: Exception) -> dict[str, Any]:
    code = getattr(exc, "code", None) or getattr(exc, "error_type", "invalid_task")
    error: dict[str, Any] = {"code": code, "message": str(exc)}
    details = getattr(exc, "details", None)
    if details:
        error["details"] = details
    return {"index": index, "status": status, "error": error}


def _unavailable(index: int, outcome: object) -> dict[str, Any]:
    # The cause goes to the server log; the caller learns only that it may send it again.
    log.warning(
        "batch item not published",
        extra={"json_fields": {"index": index, "error_type": type(outcome).__name__}},
    )
    error = {"code": "service_unavailable", "message": "the task queue is unavailable; retry"}
    return {"index": index, "status": "failed", "error": error}


def _answer(results: list[dict[str, Any] | None]) -> tuple[Response, int, dict[str, str]]:
    done = [r for r in results if r is not None]
    counts = {s: sum(r["status"] == s for r in done) for s in ("queued", "rejected", "failed")}
    if counts["queued"] == len(done):
        return jsonify(counts | {"results": done}), 202, {}
    if counts["rejected"] == len(done):
        # A 2xx would read as "accepted" to a client that only checks the status class.
        raise ApiRequestError(
            f"nothing was queued: all {len(done)} tasks were rejected; see details",
            code="nothing_queued",
            details=done,
        )
    if counts["failed"] and not counts["queued"]:
        raise RetryLaterError(
            "the task queue is unavailable; nothing was queued, send the batch again shortly",
            status=503,
            code="service_unavailable",
            details=done,
        )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if counts["failed"] else {}
    return jsonify(counts | {"results": done}), 207, headers
