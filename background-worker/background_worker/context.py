"""The worker's TaskContext: input reads, outputs, the task's deadline and cancellation."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.cloud import storage

from taskcore.context import TaskContext
from taskcore.envelope import TaskEnvelope
from taskcore.errors import (
    MissingInputError,
    PermanentTaskError,
    TaskTimeoutError,
    TransientTaskError,
)
from taskcore.outputs import OutputWriter
from taskcore.payloads import parse_gs_uri
from taskcore.settings import Settings

# Inputs larger than this are refused rather than loaded into a worker's memory.
MAX_INPUT_BYTES = 256 * 1024 * 1024


class TaskCancelled(TransientTaskError):
    """Raised inside a handler when the execution is shutting down and its message is nacked."""

    error_type = "cancelled"


@dataclass
class WorkerContext(TaskContext):
    """The task being run and the only ways a handler should touch the outside world."""

    settings: Settings
    envelope: TaskEnvelope
    bucket: storage.Bucket
    delivery_attempt: int
    time_limit: float
    started: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    storage_retry: object = None
    outputs: OutputWriter = field(init=False)

    def __post_init__(self) -> None:
        self.outputs = OutputWriter(
            self.bucket, self.envelope.task_id, self.check_alive, self.storage_retry
        )

    @property
    def task_id(self) -> str:
        return self.envelope.task_id

    @property
    def attempt(self) -> int:
        return self.delivery_attempt or 1

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Not recorded yet."""

    @property
    def deadline(self) -> float:
        """Monotonic time at which the task's time limit runs out."""
        return self.started + self.time_limit

    def check_alive(self) -> None:
        """Raise if the task is past its time limit or the execution cancelled it."""
        if self.cancelled.is_set():
            raise TaskCancelled("execution is shutting down; message returned to the queue")
        if time.monotonic() > self.deadline:
            raise TaskTimeoutError(f"task exceeded its time limit of {self.time_limit:g}s")

    def sleep(self, seconds: float) -> None:
        """Wait (simulated work), waking early to raise on cancellation or time limit."""
        end = time.monotonic() + seconds
        while True:
            self.check_alive()
            remaining = min(end, self.deadline + 0.001) - time.monotonic()
            if remaining <= 0:
                self.check_alive()
                return
            if self.cancelled.wait(remaining):
                self.check_alive()

    def read_input(self, uri: str) -> tuple[bytes, str]:
        """Bytes and content type of an input object inside the pipeline's bucket."""
        bucket_name, name = parse_gs_uri(uri)
        if bucket_name != self.bucket.name:
            raise PermanentTaskError(
                f"input {uri} is outside the pipeline bucket {self.bucket.name}"
            )
        self.check_alive()
        blob = self.bucket.blob(name)
        try:
            # One request: the range caps memory, and the response headers fill content_type.
            data = blob.download_as_bytes(start=0, end=MAX_INPUT_BYTES, retry=self.storage_retry)
        except gexc.NotFound:
            raise MissingInputError(f"input {uri} does not exist") from None
        if len(data) > MAX_INPUT_BYTES:
            raise PermanentTaskError(f"input {uri} is larger than the {MAX_INPUT_BYTES}-byte limit")
        return data, blob.content_type or "application/octet-stream"
