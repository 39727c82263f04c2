"""Task status records: one JSON object per task at status/<task_id>.json in the bucket.

The API creates the `queued` record create-only after the publish is confirmed (and off
the request path), so it can never overwrite a record the worker already wrote; the
worker overwrites it as the task runs, succeeds, fails or is dead-lettered.
"""

from __future__ import annotations

import enum
import logging
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import storage
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

STATUS_PREFIX = "status/"


class TaskState(enum.StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


class TaskStatus(BaseModel):
    """What is known about one task."""

    task_id: str
    task_type: str
    state: TaskState
    attempts: int = 0
    last_error: dict[str, str] | None = None
    outputs: list[str] = Field(default_factory=list)
    submitted_at: datetime | None = None
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    execution: str | None = None
    message_id: str | None = None
    replay_count: int = 0


def status_object_name(task_id: str) -> str:
    """The object that holds task_id's status record."""
    return f"{STATUS_PREFIX}{task_id}.json"


class StatusStore:
    """Reads and writes status records in the pipeline bucket."""

    def __init__(self, bucket: storage.Bucket, retry=None) -> None:
        self.bucket = bucket
        # None keeps the client's defaults; the worker passes one that rides out outages.
        self._retry = {} if retry is None else {"retry": retry}

    def get(self, task_id: str) -> TaskStatus | None:
        """The task's status record, or None if there is none."""
        try:
            data = self.bucket.blob(status_object_name(task_id)).download_as_bytes(**self._retry)
        except gexc.NotFound:
            return None
        return TaskStatus.model_validate_json(data)

    def put(self, status: TaskStatus) -> None:
        """Write (overwrite) the task's status record."""
        self.bucket.blob(status_object_name(status.task_id)).upload_from_string(
            status.model_dump_json(), content_type="application/json", **self._retry
        )

    def create(self, status: TaskStatus) -> bool:
        """Write the record only if none exists yet; False when one already did."""
        try:
            self.bucket.blob(status_object_name(status.task_id)).upload_from_string(
                status.model_dump_json(),
                content_type="application/json",
                if_generation_match=0,
                **self._retry,
            )
        except gexc.PreconditionFailed:
            return False
        return True

    def list(self, state: TaskState | None = None, limit: int = 100) -> list[TaskStatus]:
        """Recent status records (by update time, newest first), optionally of one state."""
        records = []
        for blob in self.bucket.list_blobs(prefix=STATUS_PREFIX):
            try:
                record = TaskStatus.model_validate_json(blob.download_as_bytes())
            except (gexc.NotFound, ValueError):
                continue
            if state is None or record.state == state:
                records.append(record)
        records.sort(key=lambda r: r.updated_at, reverse=True)
        return records[:limit]
