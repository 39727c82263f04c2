"""Submitting one task: the generic POST /submit-task and the recipe's two shortcuts.

Each answers 202 {task_id, message_id, status, task_type} once Pub/Sub confirmed the publish.
With an Idempotency-Key header a repeat of the same request answers with the same task and
publishes nothing (task_api.idempotency); without one, nothing but Pub/Sub is touched.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from task_api import idempotency
from task_api.auth import presented_key, require_submit_key
from task_api.errors import RetryLaterError
from task_api.request_body import json_object
from task_api.scheduling import schedule_task, scheduled_body, take_run_at
from task_api.services import ApiServices, services
from task_api.submission import (
    accepted,
    accepted_body,
    location,
    prepare_task,
    publish,
    split_task_type,
)
from taskcore.envelope import TaskEnvelope
from taskcore.errors import PublishOutcomeUnknown

log = logging.getLogger(__name__)

bp = Blueprint("tasks", __name__)

# The recipe's defaults for its two convenience routes.
FILE_TASK_DEFAULTS = {"filename": "sample.txt", "processing_time": 2}
DATA_TASK_DEFAULTS = {"dataset_size": 100, "transformation": "normalize"}
REPLAYED_HEADER = "Idempotent-Replayed"

Accepted = tuple[Response, int, dict[str, str]]


@bp.post("/submit-task")
@require_submit_key
def submit_task() -> Accepted:
    """Validate {"task_type", ...fields} against the type's model and queue it."""
    task_type, fields = split_task_type(services(), json_object())
    return _queue(task_type, fields)


@bp.post("/submit-file-task")
@require_submit_key
def submit_file_task() -> Accepted:
    """The recipe's file task: {filename, processing_time}, defaults sample.txt and 2 s."""
    return _queue("file_processing", {**FILE_TASK_DEFAULTS, **json_object(empty_means={})})


@bp.post("/submit-data-task")
@require_submit_key
def submit_data_task() -> Accepted:
    """The recipe's data task: {dataset_size, transformation}, defaults 100 and normalize."""
    return _queue("data_transformation", {**DATA_TASK_DEFAULTS, **json_object(empty_means={})})


def _queue(task_type: str, fields: dict[str, Any]) -> Accepted:
    """Validate, publish and answer 202; with an Idempotency-Key, at most once per key."""
    api = services()
    key = request.headers.get(idempotency.HEADER)
    # Validation comes first: a request that is refused does not use up its key.
    run_at = take_run_at(fields)
    envelope = prepare_task(api, task_type, fields)
    if key is None:
        if run_at is not None:
            schedule_task(api, envelope, run_at)
            return jsonify(scheduled_body(envelope, run_at)), 202, location(envelope.task_id)
        body = accepted(api, envelope, _publish(api, envelope, keyed=False))
        return jsonify(body), 202, location(envelope.task_id)
    return _queue_once(api, idempotency.check_key(key), envelope, fields, run_at)


def _publish(api: ApiServices, envelope: TaskEnvelope, *, keyed: bool) -> str:
    """publish(), with an outcome Pub/Sub left open answered as such (503, naming the task)."""
    try:
        return publish(api, envelope)
    except PublishOutcomeUnknown as exc:
        log.warning(
            "publish outcome unknown",
            extra={"json_fields": {"task_id": envelope.task_id, "error": str(exc)[:300]}},
        )
        advice = (
            "send the same request again with the same Idempotency-Key: it runs once either way"
            if keyed
            else "the task may run; to retry safely, submit with an Idempotency-Key"
        )
        raise RetryLaterError(
            f"the task queue did not confirm task {envelope.task_id} in time, and it may or "
            f"may not have been queued; {advice}",
            status=503,
            code="outcome_unknown",
            details=[{"task_id": envelope.task_id, "status": "unknown"}],
        ) from None


def _queue_once(
    api: ApiServices,
    key: str,
    envelope: TaskEnvelope,
    fields: dict[str, Any],
    run_at: datetime | None,
) -> Accepted:
    scope = presented_key() if api.settings.api_keys else idempotency.ANONYMOUS_SCOPE
    claim = api.idempotency.claim(
        idempotency.record_name(scope or idempotency.ANONYMOUS_SCOPE, key),
        envelope.task_id,
        envelope.task_type,
        idempotency.body_hash(envelope.task_type, fields),
    )
    record = claim.record
    if claim.replay:
        body = accepted_body(record.task_id, record.task_type, record.message_id or "")
        headers = {**location(record.task_id), REPLAYED_HEADER: "true"}
        return jsonify(body), 202, headers
    if record.task_id != envelope.task_id:
        # Taking over a failed or abandoned claim: keep its task id, so if that earlier
        # publish landed after all, both messages are one task to the worker.
        envelope = envelope.model_copy(update={"task_id": record.task_id})
    try:
        if run_at is not None:
            schedule_task(api, envelope, run_at)
            api.idempotency.finish(claim, "")
            return jsonify(scheduled_body(envelope, run_at)), 202, location(envelope.task_id)
        message_id = _publish(api, envelope, keyed=True)
    except Exception:
        # Released with its task id: the retry takes the key over as the SAME task, so if
        # this publish landed after all, both messages are one task to the worker.
        api.idempotency.fail(claim)
        raise
    api.idempotency.finish(claim, message_id)
    body = accepted(api, envelope, message_id)
    return jsonify(body), 202, location(envelope.task_id)
