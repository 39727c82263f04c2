"""The API's response bodies as pydantic models: the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
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
    """A task Pub/Sub has confirmed (queued), or a delayed task kept until due (scheduled)."""

    task_id: str = Field(pattern=TASK_ID_PATTERN)
    message_id: str | None = Field(
        description="The Pub/Sub message id (null for a scheduled task: not published yet)."
    )
    status: Literal["queued", "scheduled"]
    task_type: str
    run_at: datetime | None = Field(None, description="When a scheduled task is due.")


class BatchItemResult(BaseModel):
    """One batch item: queued or scheduled (with ids), rejected (invalid: fix it), failed
    (retry it) or unknown (retry it with its idempotency_key)."""

    index: int = Field(ge=0)
    status: Literal["queued", "scheduled", "rejected", "failed", "unknown"]
    task_id: str | None = None
    message_id: str | None = None
    task_type: str | None = None
    run_at: datetime | None = None
    replayed: bool | None = None
    error: ErrorBody | None = None


class BatchAccepted(BaseModel):
    """Per-item results of POST /submit-tasks, in request order."""

    queued: int
    scheduled: int
    rejected: int
    failed: int
    unknown: int
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


class OutputInfo(BaseModel):
    """One output of a succeeded task."""

    name: str = Field(description="Its name within the task's outputs (may contain '/').")
    size: int | None = Field(description="Bytes.")
    content_type: str | None
    uri: str = Field(description="gs:// URI of the object, at the generation the task wrote.")
    url: str = Field(description="API path of its content: GET it with the same key.")


class TaskOutputs(BaseModel):
    """GET /tasks/{task_id}/outputs: the outputs of a succeeded task."""

    task_id: str
    outputs: list[OutputInfo]


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
    TaskOutputs,
    UploadStored,
    Health,
    Ready,
]


# --- the admin API (documented only while ADMIN_API_KEYS is set) ----------------------------


class DeadLetterSummary(BaseModel):
    """One dead letter as GET /admin/dlq lists it."""

    message_id: str
    task_id: str
    task_type: str | None
    error_type: str
    error_message: str
    attempts: int
    dead_lettered_at: str = Field(description="ISO 8601.")
    dead_lettered_by: Literal["worker", "pubsub"]
    source_subscription: str | None
    replay_count: int


class DeadLetterScan(BaseModel):
    """How the scan behind a listing went."""

    pulls: int
    redelivered: int
    seconds: float


class DeadLetterList(BaseModel):
    """GET /admin/dlq: what the DLQ holds and which dead letters match the filter."""

    in_dlq: int
    matched: int
    dead_letters: list[DeadLetterSummary]
    scan: DeadLetterScan


class DeadLetterRecord(DeadLetterSummary):
    """A dead letter in full: attributes, body and the task's status record."""

    publish_time: str
    attributes: dict[str, str]
    body: Any = Field(description="The message body as JSON, else as text, else null.")
    data_base64: str
    status: TaskStatus | None


class DeadLetterRecords(BaseModel):
    """GET /admin/dlq/{task_id}."""

    dead_letters: list[DeadLetterRecord]


class DlqOperationResult(BaseModel):
    """What a replay or purge did (or, with dry_run, would do)."""

    action: str
    filter: dict[str, Any]
    in_dlq: int
    matched: int
    selected: int
    done: int
    failed: list[dict[str, Any]]
    dry_run: bool
    cancelled: bool
    interrupted: bool
    seconds: float
    task_ids: list[str]
    preview: list[dict[str, Any]]
    archive: str | None
    audit: str | None
    audit_error: str | None
    ok: bool
    left_in_dlq: int


class TaskSummary(BaseModel):
    """A task as the admin list shows it: its record without payload, history or outputs."""

    task_id: str
    task_type: str
    state: str
    queue: str
    attempts: int
    failures: int
    replay_count: int
    last_error: dict[str, Any] | None
    progress: dict[str, Any] | None
    submitted_at: str | None
    updated_at: str
    finished_at: str | None


class TaskList(BaseModel):
    """GET /admin/tasks: one page of recent tasks, newest change first."""

    tasks: list[TaskSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page.")
    scanned_to: str | None = Field(
        description="How far back the journal was read (ISO 8601): a short page with a "
        "next_cursor searched only this far; ask for the next page to search further."
    )


class TaskDetail(BaseModel):
    """GET /admin/tasks/{task_id}: the record in full and, once it succeeded, its outputs."""

    task: TaskStatus
    outputs: list[OutputInfo]


class MinuteActivity(BaseModel):
    """State changes in one minute, summed over every API process and worker execution."""

    minute: str
    submitted: int
    started: int
    succeeded: int
    retried: int
    dead_lettered: int
    cancelled: int


class Overview(BaseModel):
    """GET /admin/overview: the last hour, what runs now, and the subscriptions' backlog."""

    generated_at: str
    running_now: int = Field(description="Tasks running in live worker executions.")
    writers: dict[str, int]
    last_hour: dict[str, Any]
    minutes: list[MinuteActivity]
    backlog: dict[str, Any] = Field(
        description="From Cloud Monitoring (or our emulator); available is false, with the "
        "reason in detail, where the numbers cannot be had. main and dlq: the default queue's "
        "subscription and the DLQ's; queues: every declared queue's, the default first."
    )


class SignInLink(BaseModel):
    """A one-time sign-in link: open it in a browser within expires_in seconds, once."""

    path: str
    url: str
    expires_at: str = Field(description="ISO 8601.")
    expires_in: int


ADMIN_RESPONSE_MODELS: list[type[BaseModel]] = [
    SignInLink,
    DeadLetterList,
    DeadLetterRecords,
    DlqOperationResult,
    TaskList,
    TaskDetail,
    Overview,
]
