"""The API's response bodies as pydantic models: the OpenAPI document is generated from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from taskcore.envelope import TASK_ID_PATTERN
from taskcore.status import TaskStatus

# POST /submit-tasks takes at most this many tasks in one request.
MAX_BATCH_TASKS = 500


class ErrorBody(BaseModel):
    """What went wrong: a stable code, a message for people, and per-field details."""

    code: str = Field(description="Stable, machine-readable error code, e.g. schema_violation.")
    message: str
    details: list[dict[str, Any]] | None = Field(
        None, description="Per-field problems ({field, message, type}) or per-item results."
    )


class ErrorResponse(BaseModel):
    """Every error the API returns."""

    error: ErrorBody


class TaskAccepted(BaseModel):
    """A task Pub/Sub has confirmed: it will run."""

    task_id: str = Field(pattern=TASK_ID_PATTERN)
    message_id: str = Field(min_length=1, description="The Pub/Sub message id.")
    status: Literal["queued"]
    task_type: str


class BatchItemResult(BaseModel):
    """One batch item: queued (with ids), rejected (invalid: fix it) or failed (retry it)."""

    index: int = Field(ge=0)
    status: Literal["queued", "rejected", "failed"]
    task_id: str | None = None
    message_id: str | None = None
    task_type: str | None = None
    error: ErrorBody | None = None


class BatchAccepted(BaseModel):
    """Per-item results of POST /submit-tasks, in request order."""

    queued: int
    rejected: int
    failed: int
    results: list[BatchItemResult]


class TaskTypeInfo(BaseModel):
    """A registered task type and the JSON Schema of its fields."""

    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema")


class TaskTypeList(BaseModel):
    """GET /task-types."""

    task_types: list[TaskTypeInfo]


class UploadStored(BaseModel):
    """An uploaded file, stored under uploads/ in the bucket."""

    name: str
    object: str
    uri: str = Field(description="gs:// URI to pass as a task's source_uri.")
    size: int
    content_type: str


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class Ready(BaseModel):
    """Readiness: the task topic answered."""

    status: Literal["ready"]
    checks: dict[str, str]


RESPONSE_MODELS: list[type[BaseModel]] = [
    ErrorResponse,
    TaskAccepted,
    BatchAccepted,
    TaskTypeList,
    TaskStatus,
    UploadStored,
    Health,
    Ready,
]
