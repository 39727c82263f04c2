"""The task envelope: what travels in a Pub/Sub message, and how it is (de)serialised.

Data is a JSON object {schema_version, task_id, task_type, payload, submitted_at};
`task_id` and `task_type` travel as message attributes too, so operators and
filters can see them without parsing the body.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskcore.errors import InvalidTaskError
from taskcore.payloads import TaskPayload
from taskcore.settings import DEFAULT_QUEUE
from taskcore.tasks import TaskRegistry

SCHEMA_VERSION = 1
# Pub/Sub's own limit is 10 MB per message; we refuse to build one above this.
MAX_MESSAGE_BYTES = 10_000_000
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def new_task_id() -> str:
    """A fresh, URL- and object-name-safe task id."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class TaskEnvelope(BaseModel):
    """A task as it travels: identity, type, typed payload fields and submission time."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    # task_id names output objects, so it is restricted to characters safe in a path segment.
    task_id: str = Field(default_factory=new_task_id, pattern=TASK_ID_PATTERN)
    task_type: str
    payload: dict[str, Any]
    submitted_at: datetime = Field(default_factory=utcnow)
    # Input object URI → the generation it had when the task was submitted (set by the API):
    # the worker reads exactly that generation.
    inputs: dict[str, int] = Field(default_factory=dict)
    # The queue its task type routes to (its topic; the worker executions that drain it).
    queue: str = DEFAULT_QUEUE

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        """The Pub/Sub data bytes and attributes for this task."""
        data = self.model_dump_json().encode("utf-8")
        attributes = {
            "task_id": self.task_id,
            "task_type": self.task_type,
            "schema_version": str(self.schema_version),
            "queue": self.queue,
        }
        return data, attributes


def build_envelope(
    registry: TaskRegistry,
    task_type: str,
    fields: Mapping[str, Any],
    task_id: str | None = None,
) -> tuple[TaskEnvelope, TaskPayload]:
    """Validate fields against the type's model and wrap them in a new envelope."""
    payload = registry.validate_payload(task_type, dict(fields))
    envelope = TaskEnvelope(
        task_id=task_id or new_task_id(),
        task_type=task_type,
        payload=payload.model_dump(mode="json", exclude_unset=True),
        queue=registry.get(task_type).queue,
    )
    return envelope, payload


def parse_message(
    registry: TaskRegistry,
    data: bytes,
    attributes: Mapping[str, str],
    max_bytes: int = MAX_MESSAGE_BYTES,
    message_id: str | None = None,
) -> tuple[TaskEnvelope, TaskPayload]:
    """Parse and validate a message body; InvalidTaskError says exactly what is wrong."""
    if len(data) > max_bytes:
        raise InvalidTaskError(
            f"body is {len(data)} bytes; tasks are limited to {max_bytes}",
            error_type="message_too_large",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTaskError(
            f"body is not valid UTF-8: {exc}", error_type="invalid_utf8"
        ) from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidTaskError(f"body is not JSON: {exc}", error_type="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidTaskError(
            f"body is a JSON {type(body).__name__}, not an object", error_type="not_an_object"
        )
    task_type = body.get("task_type") or attributes.get("task_type")
    if not task_type or not isinstance(task_type, str):
        raise InvalidTaskError("body has no task_type", error_type="missing_task_type")
    if "payload" in body:
        fields = body["payload"]
        if not isinstance(fields, dict):
            raise InvalidTaskError("payload is not an object", error_type="schema_violation")
    else:
        # The recipe's flat shape: task fields beside task_type at top level.
        fields = {
            k: v
            for k, v in body.items()
            if k
            not in ("task_type", "task_id", "submitted_at", "inputs", "schema_version", "queue")
        }
    task_id = (
        body.get("task_id") or attributes.get("task_id") or _fallback_task_id(data, message_id)
    )
    payload = registry.validate_payload(task_type, fields)
    try:
        envelope = TaskEnvelope(
            schema_version=body.get("schema_version", SCHEMA_VERSION),
            task_id=str(task_id),
            task_type=task_type,
            payload=fields,
            submitted_at=body.get("submitted_at") or utcnow(),
            inputs=body.get("inputs") or {},
            queue=body.get("queue") or registry.get(task_type).queue,
        )
    except ValueError as exc:
        raise InvalidTaskError(f"invalid envelope: {exc}", error_type="invalid_envelope") from None
    return envelope, payload


def _fallback_task_id(data: bytes, message_id: str | None) -> str:
    # A message published without a task_id (by hand, or by Cloud Scheduler on a cron) is
    # one task per publish: its message id is stable across redeliveries, and each cron
    # run gets a new one. A dead letter carries the id as an attribute, so a replay (which
    # gets a new message id) still finds the same outputs.
    if message_id:
        return f"msg-{message_id}"
    return "content-" + hashlib.sha256(data).hexdigest()[:32]


def peek_task_fields(data: bytes, attributes: Mapping[str, str]) -> dict[str, str]:
    """Best-effort task_id/task_type of any message, for logs and dead letters."""
    fields = {k: attributes[k] for k in ("task_id", "task_type") if attributes.get(k)}
    if len(fields) < 2:
        try:
            body = json.loads(data)
            if isinstance(body, dict):
                for key in ("task_id", "task_type"):
                    if isinstance(body.get(key), str) and key not in fields:
                        fields[key] = body[key]
        except (ValueError, UnicodeDecodeError):
            pass
    return fields
