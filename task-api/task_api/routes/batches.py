"""POST /submit-tasks: up to MAX_BATCH_TASKS tasks in one request, each judged on its own.

Every item is validated independently; the valid ones are published together (all handed to
the publisher's batcher before any is waited for), so a batch costs about one publish round
trip. An item may carry its own `idempotency_key`: sending the batch again is then safe, item
by item (an item already published answers with its task, `replayed: true`). The answer
lists one result per item, in order, each with a status:

- `queued`: published; its status record exists;
- `scheduled`: an item with `delay_seconds` or `run_at`, kept until due (task_api.scheduling);
- `rejected`: invalid, and sending it again will not help;
- `failed`: Pub/Sub surely did not take it: safe and useful to send again;
- `unknown`: the publish timed out or broke off, so it may or may not be queued: send it
  again with the same idempotency_key and it runs once either way (without a key it may run
  twice, or not at all).

The HTTP status: 202 when every item was queued or scheduled; 207 when some were not; 400
`nothing_queued` when every item was rejected; 503 with Retry-After when nothing was queued
and some items failed or are unknown.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from task_api import idempotency
from task_api.auth import presented_key, require_submit_key
from task_api.errors import RETRY_AFTER_SECONDS, RetryLaterError
from task_api.request_body import check_json_values, json_object, refuse_unknown_fields
from task_api.scheduling import schedule_task, scheduled_body, take_run_at
from task_api.schemas import MAX_BATCH_TASKS
from task_api.services import ApiServices, services
from task_api.submission import accepted_body, accepted_many, prepare_task, split_task_type
from taskcore.envelope import TaskEnvelope
from taskcore.errors import (
    ApiRequestError,
    InfrastructureError,
    InvalidTaskError,
    PublishOutcomeUnknown,
)

log = logging.getLogger(__name__)

bp = Blueprint("batches", __name__)

ITEM_KEY = "idempotency_key"
# Idempotency records of one batch are claimed this many at a time.
CLAIMERS = 16


@dataclass
class Item:
    """A valid item on its way: its envelope, and its idempotency claim if it has a key."""

    index: int
    envelope: TaskEnvelope
    fields: dict[str, Any]
    key: str | None = None
    claim: idempotency.Claim | None = None
    run_at: datetime | None = None


@bp.post("/submit-tasks")
@require_submit_key
def submit_tasks() -> tuple[Response, int, dict[str, str]]:
    """Queue {"tasks": [{task_type, ...fields, idempotency_key?}, ...]}; per-item results."""
    if idempotency.HEADER in request.headers:
        # Silently ignoring the header would let a client believe its retries are safe.
        raise ApiRequestError(
            f"{idempotency.HEADER} is not supported on batches; give each item its own "
            f'"{ITEM_KEY}" instead',
            code="idempotency_not_supported",
        )
    api = services()
    items = _tasks_of(json_object(check_values=False))
    results: list[dict[str, Any] | None] = [None] * len(items)
    ready: list[Item] = []
    for index, raw in enumerate(items):
        try:
            ready.append(_prepare(api, index, raw))
        except (ApiRequestError, InvalidTaskError) as exc:
            results[index] = _item_error(index, "rejected", exc)
        except InfrastructureError as exc:  # its inputs could not be checked just now
            results[index] = _unavailable(index, exc)
    ready = _claim_keys(api, ready, results)
    delayed = [item for item in ready if item.run_at is not None]
    if delayed:
        _schedule(api, delayed, results)
        ready = [item for item in ready if item.run_at is None]
    if ready:
        outcomes = api.clients.publisher.publish_tasks([item.envelope for item in ready])
        published = []
        for item, outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, str) and outcome:
                if item.claim is not None:
                    api.idempotency.finish(item.claim, outcome)
                published.append((item, outcome))
                continue
            if item.claim is not None:
                api.idempotency.fail(item.claim)
            if isinstance(outcome, InvalidTaskError):
                results[item.index] = _item_error(item.index, "rejected", outcome)
            elif isinstance(outcome, PublishOutcomeUnknown):
                results[item.index] = _unknown(item)
            else:
                results[item.index] = _unavailable(item.index, outcome)
        accepted_many(api, [(item.envelope, message_id) for item, message_id in published])
        for item, message_id in published:
            body = accepted_body(item.envelope.task_id, item.envelope.task_type, message_id)
            results[item.index] = {"index": item.index, **body}
    return _answer(results)


def _prepare(api: ApiServices, index: int, raw: Any) -> Item:
    if not isinstance(raw, dict):
        raise ApiRequestError("each task must be a JSON object", code="not_an_object")
    check_json_values(raw)
    raw = dict(raw)
    key = raw.pop(ITEM_KEY, None)
    if key is not None:
        if not isinstance(key, str):
            raise ApiRequestError(f"{ITEM_KEY} must be a string", code="invalid_idempotency_key")
        idempotency.check_key(key)
    task_type, fields = split_task_type(api, raw)
    run_at = take_run_at(fields)
    return Item(index, prepare_task(api, task_type, fields), fields, key, run_at=run_at)


def _schedule(api: ApiServices, delayed: list[Item], results) -> None:
    """Keep the delayed items until they are due (in parallel), each answered on its own."""

    def keep(item: Item) -> Exception | None:
        try:
            schedule_task(api, item.envelope, item.run_at)
        except InfrastructureError as exc:
            return exc
        return None

    with ThreadPoolExecutor(min(CLAIMERS, len(delayed)), thread_name_prefix="delayed") as pool:
        outcomes = list(pool.map(keep, delayed))
    for item, failure in zip(delayed, outcomes, strict=True):
        if failure is not None:
            if item.claim is not None:
                api.idempotency.fail(item.claim)
            results[item.index] = _unavailable(item.index, failure)
            continue
        if item.claim is not None:
            api.idempotency.finish(item.claim, "")
        results[item.index] = {"index": item.index, **scheduled_body(item.envelope, item.run_at)}


def _claim_keys(api: ApiServices, ready: list[Item], results) -> list[Item]:
    """Claim the items' keys; those already published answer now; the rest go on."""
    keyed = [item for item in ready if item.key is not None]
    if not keyed:
        return ready
    scope = (presented_key() if api.settings.api_keys else None) or idempotency.ANONYMOUS_SCOPE

    def claim(item: Item):
        try:
            return api.idempotency.claim(
                idempotency.record_name(scope, item.key),
                item.envelope.task_id,
                item.envelope.task_type,
                idempotency.body_hash(item.envelope.task_type, item.fields),
            )
        except (ApiRequestError, InfrastructureError) as exc:
            return exc

    with ThreadPoolExecutor(min(CLAIMERS, len(keyed)), thread_name_prefix="claims") as pool:
        claims = dict(zip((item.index for item in keyed), pool.map(claim, keyed), strict=True))
    going = []
    for item in ready:
        outcome = claims.get(item.index)
        if outcome is None:
            going.append(item)
        elif isinstance(outcome, InfrastructureError) or (
            isinstance(outcome, ApiRequestError) and outcome.status == 409
        ):
            results[item.index] = _unavailable(item.index, outcome)
        elif isinstance(outcome, ApiRequestError):
            results[item.index] = _item_error(item.index, "rejected", outcome)
        elif outcome.replay:
            record = outcome.record
            body = accepted_body(record.task_id, record.task_type, record.message_id or "")
            results[item.index] = {"index": item.index, **body, "replayed": True}
        else:
            if outcome.record.task_id != item.envelope.task_id:
                # Taking over a failed claim keeps its task id (see routes.tasks).
                item.envelope = item.envelope.model_copy(update={"task_id": outcome.record.task_id})
            item.claim = outcome
            going.append(item)
    return going


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


def _unknown(item: Item) -> dict[str, Any]:
    log.warning(
        "batch item publish outcome unknown",
        extra={"json_fields": {"index": item.index, "task_id": item.envelope.task_id}},
    )
    error = {
        "code": "outcome_unknown",
        "message": "the task queue did not confirm this task in time: it may or may not be "
        f"queued; send it again with the same {ITEM_KEY} to make sure it runs once",
    }
    return {
        "index": item.index,
        "status": "unknown",
        "task_id": item.envelope.task_id,
        "error": error,
    }


def _answer(results: list[dict[str, Any] | None]) -> tuple[Response, int, dict[str, str]]:
    done = [r for r in results if r is not None]
    statuses = ("queued", "scheduled", "rejected", "failed", "unknown")
    counts = {s: sum(r["status"] == s for r in done) for s in statuses}
    taken = counts["queued"] + counts["scheduled"]
    if taken == len(done):
        return jsonify(counts | {"results": done}), 202, {}
    if counts["rejected"] == len(done):
        # A 2xx would read as "accepted" to a client that only checks the status class.
        raise ApiRequestError(
            f"nothing was queued: all {len(done)} tasks were rejected; see details",
            code="nothing_queued",
            details=done,
        )
    if (counts["failed"] or counts["unknown"]) and not taken:
        raise RetryLaterError(
            "the task queue is unavailable; nothing was confirmed queued, send the batch again "
            f"shortly (items with an {ITEM_KEY} run once however often they are sent)",
            status=503,
            code="service_unavailable",
            details=done,
        )
    retry = counts["failed"] or counts["unknown"]
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if retry else {}
    return jsonify(counts | {"results": done}), 207, headers
