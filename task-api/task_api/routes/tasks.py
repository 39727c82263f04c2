"""Submitting tasks: the generic POST /submit-task, the recipe's two shortcuts, and the catalog."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify

from task_api.request_body import json_object
from task_api.services import services
from taskcore.envelope import build_envelope
from taskcore.errors import ApiRequestError, PublishError

log = logging.getLogger(__name__)

bp = Blueprint("tasks", __name__)

# The recipe's defaults for its two convenience routes.
FILE_TASK_DEFAULTS = {"filename": "sample.txt", "processing_time": 2}
DATA_TASK_DEFAULTS = {"dataset_size": 100, "transformation": "normalize"}


@bp.post("/submit-task")
def submit_task() -> tuple[Response, int, dict[str, str]]:
    """Validate {"task_type", ...fields} against the type's model and queue it."""
    body = json_object()
    task_type = body.pop("task_type", None)
    if task_type is None:
        known = services().registry.names()
        raise ApiRequestError(
            f"body needs a task_type; known types: {', '.join(known)}",
            code="missing_task_type",
            details=[_task_type_detail("field required", "missing", known)],
        )
    if not isinstance(task_type, str):
        raise ApiRequestError(
            "task_type must be a string",
            code="invalid_task_type",
            details=[
                _task_type_detail("must be a string", "string_type", services().registry.names())
            ],
        )
    return _queue(task_type, body)


@bp.post("/submit-file-task")
def submit_file_task() -> tuple[Response, int, dict[str, str]]:
    """The recipe's file task: {filename, processing_time}, defaults sample.txt and 2 s."""
    return _queue("file_processing", {**FILE_TASK_DEFAULTS, **json_object(empty_means={})})


@bp.post("/submit-data-task")
def submit_data_task() -> tuple[Response, int, dict[str, str]]:
    """The recipe's data task: {dataset_size, transformation}, defaults 100 and normalize."""
    return _queue("data_transformation", {**DATA_TASK_DEFAULTS, **json_object(empty_means={})})


@bp.get("/task-types")
def task_types() -> Response:
    """The registered task types with the JSON Schema of their fields."""
    return jsonify(
        task_types=[
            {"name": t.name, "description": t.description, "schema": t.json_schema()}
            for t in services().registry
        ]
    )


def _task_type_detail(message: str, kind: str, known: list[str]) -> dict[str, Any]:
    return {"field": "task_type", "message": message, "type": kind, "allowed": known}


def _queue(task_type: str, fields: dict[str, Any]) -> tuple[Response, int, dict[str, str]]:
    """Validate, publish and answer 202; InvalidTaskError and PublishError become 400 and 503."""
    api = services()
    if task_type not in api.registry:
        known = api.registry.names()
        raise ApiRequestError(
            f"unknown task_type {task_type!r}; known types: {', '.join(known)}",
            code="unknown_task_type",
            details=[
                _task_type_detail(f"unknown task type {task_type!r}", "unknown_task_type", known)
            ],
        )
    envelope, _ = build_envelope(api.registry, task_type, fields)
    message_id = api.clients.publisher.publish_task(envelope)
    if not message_id:
        # A 202 promises the task is in Pub/Sub; without a message id we cannot promise that.
        raise PublishError(f"publish of task {envelope.task_id} returned no message id")
    log.info(
        "task accepted",
        extra={
            "json_fields": {
                "task_id": envelope.task_id,
                "task_type": task_type,
                "message_id": message_id,
            }
        },
    )
    body = {
        "task_id": envelope.task_id,
        "message_id": message_id,
        "status": "queued",
        "task_type": task_type,
    }
    return jsonify(body), 202, {"Location": f"/tasks/{envelope.task_id}"}
