"""What every submit route does with one task: resolve its type, validate, size-check, publish,
and record the acceptance (log line, `queued` status record, response body).

The single-task routes and POST /submit-tasks share these steps, so a task is judged the
same way whichever route brought it.
"""

from __future__ import annotations

import logging
from typing import Any

from task_api.auth import caller_id
from task_api.inputs import pin_inputs
from task_api.services import ApiServices
from taskcore.envelope import TaskEnvelope, build_envelope
from taskcore.errors import ApiRequestError, PublishOutcomeUnknown
from taskcore.events import Event
from taskcore.lifecycle import Delivery, queued
from taskcore.status import utcnow

log = logging.getLogger(__name__)


def task_type_detail(message: str, kind: str, known: list[str]) -> dict[str, Any]:
    """The details entry for a problem with the task_type field."""
    return {"field": "task_type", "message": message, "type": kind, "allowed": known}


def split_task_type(api: ApiServices, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(task_type, the other fields) of a {"task_type", ...fields} object, or a 400."""
    fields = dict(body)
    task_type = fields.pop("task_type", None)
    known = api.registry.names()
    if task_type is None:
        raise ApiRequestError(
            f"body needs a task_type; known types: {', '.join(known)}",
            code="missing_task_type",
            details=[task_type_detail("field required", "missing", known)],
        )
    if not isinstance(task_type, str):
        raise ApiRequestError(
            "task_type must be a string",
            code="invalid_task_type",
            details=[task_type_detail("must be a string", "string_type", known)],
        )
    return task_type, fields


def prepare_task(api: ApiServices, task_type: str, fields: dict[str, Any]) -> TaskEnvelope:
    """A validated envelope no bigger than MAX_TASK_BYTES, its inputs checked and pinned;
    ApiRequestError/InvalidTaskError else."""
    if task_type not in api.registry:
        known = api.registry.names()
        raise ApiRequestError(
            f"unknown task_type {task_type!r}; known types: {', '.join(known)}",
            code="unknown_task_type",
            details=[
                task_type_detail(f"unknown task type {task_type!r}", "unknown_task_type", known)
            ],
        )
    envelope, payload = build_envelope(api.registry, task_type, fields)
    uris = payload.input_uris(api.settings.bucket_name)
    inputs = pin_inputs(api.settings, api.clients.bucket, uris, caller_id()) if uris else {}
    if inputs:
        envelope = envelope.model_copy(update={"inputs": inputs})
    limit = api.settings.max_task_bytes
    # The worker dead-letters bodies over MAX_TASK_BYTES; refusing them here tells the caller
    # now, instead of queueing a task that can never run.
    size = len(envelope.model_dump_json().encode("utf-8"))
    if size > limit:
        raise ApiRequestError(
            f"the task is {size} bytes as a message; tasks are limited to {limit} bytes "
            "(put large inputs in the bucket via POST /uploads and pass source_uri)",
            status=413,
            code="task_too_large",
            details=[
                {"field": "(body)", "message": f"{size} > {limit} bytes", "type": "too_large"}
            ],
        )
    return envelope


def publish(api: ApiServices, envelope: TaskEnvelope) -> str:
    """Publish and return the message id.

    PublishError (503) when Pub/Sub surely has nothing; PublishOutcomeUnknown (503 naming the
    task id) when the publish timed out or broke off and may have landed all the same.
    """
    message_id = api.clients.publisher.publish_task(envelope)
    if not message_id:
        # A 202 promises the task is in Pub/Sub; without a message id we cannot promise that.
        raise PublishOutcomeUnknown(f"publish of task {envelope.task_id} returned no message id")
    return message_id


def accepted(api: ApiServices, envelope: TaskEnvelope, message_id: str) -> dict[str, Any]:
    """Log the acceptance, write its `queued` status record, and return the 202 body."""
    accepted_many(api, [(envelope, message_id)])
    return accepted_body(envelope.task_id, envelope.task_type, message_id)


def accepted_many(api: ApiServices, published: list[tuple[TaskEnvelope, str]]) -> None:
    """Log each acceptance and write the queued records (in parallel) before answering."""
    for envelope, message_id in published:
        log.info(
            "task accepted",
            extra={
                "json_fields": {
                    "event": Event.TASK_ACCEPTED,
                    "task_id": envelope.task_id,
                    "task_type": envelope.task_type,
                    "message_id": message_id,
                }
            },
        )
    if api.settings.queued_status_records:
        now = utcnow()
        api.queued_records.write(
            [queued(_delivery(envelope, message_id), now) for envelope, message_id in published]
        )
    api.accepted(envelope.queue for envelope, _ in published)


def _delivery(envelope: TaskEnvelope, message_id: str) -> Delivery:
    return Delivery(
        task_id=envelope.task_id,
        task_type=envelope.task_type,
        message_id=message_id,
        queue=envelope.queue,
        submitted_at=envelope.submitted_at,
        payload=envelope.payload,
    )


def accepted_body(task_id: str, task_type: str, message_id: str) -> dict[str, Any]:
    """The body of a 202 for one task (no message id: a delayed task, not published yet)."""
    return {
        "task_id": task_id,
        "message_id": message_id or None,
        "status": "queued" if message_id else "scheduled",
        "task_type": task_type,
    }


def location(task_id: str) -> dict[str, str]:
    """The Location header pointing at the task's status."""
    return {"Location": f"/tasks/{task_id}"}
