"""The handler's view of its task: the TaskContext interface, and RunContext, which implements
it on a bucket (the worker runs handlers with it, and so does taskcore.testing).

A handler is `fn(ctx: TaskContext, payload) -> None`. It reads inputs and writes outputs only
through ctx, calls `ctx.check_alive()` (or `ctx.sleep()`) in long loops so that time limits,
cancellation and shutdown can stop it, and raises PermanentTaskError for what a retry cannot fix.
"""

from __future__ import annotations

import abc
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from google.api_core import exceptions as gexc

from taskcore.errors import (
    MissingInputError,
    PermanentTaskError,
    TaskTimeoutError,
    TransientTaskError,
)
from taskcore.outputs import OutputWriter
from taskcore.payloads import parse_gs_uri
from taskcore.status import Progress

if TYPE_CHECKING:
    from google.cloud import storage

    from taskcore.settings import Settings

# Inputs larger than this are refused rather than loaded into memory.
MAX_INPUT_BYTES = 256 * 1024 * 1024

# Why a run is stopped from outside.
SHUTDOWN = "shutdown"  # the execution is ending: the message goes back to the queue
SUPERSEDED = "superseded"  # another run holds the task now: this one's result would not count
CANCELLED = "cancelled"  # the task was cancelled (DELETE /tasks/<id>)


class RunStopped(TransientTaskError):
    """Raised inside a handler when its run must stop for a reason other than the task's own."""

    error_type = "stopped"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TaskContext(abc.ABC):
    """What one run of a task may see and do."""

    settings: Settings
    outputs: OutputWriter

    @property
    @abc.abstractmethod
    def task_id(self) -> str:
        """The task's id (stable across retries and redeliveries)."""

    @property
    @abc.abstractmethod
    def attempt(self) -> int:
        """Which run of the task this is, from 1."""

    @abc.abstractmethod
    def read_input(self, uri: str) -> tuple[bytes, str]:
        """Bytes and content type of an input object in the pipeline's bucket."""

    @abc.abstractmethod
    def check_alive(self) -> None:
        """Raise if the run must stop: past its time limit, cancelled, or shutting down."""

    @abc.abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait, waking early to raise when the run must stop."""

    @abc.abstractmethod
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the run is (0.0 to 1.0), visible in GET /tasks/<id>."""


class RunContext(TaskContext):
    """One run of a task on a bucket: its outputs, inputs, deadline and stop signal."""

    def __init__(
        self,
        *,
        settings: Settings,
        bucket: storage.Bucket,
        task_id: str,
        run_id: str,
        attempt: int,
        time_limit: float,
        delivery_attempt: int = 0,
        storage_retry: object = None,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.bucket = bucket
        self.run_id = run_id
        self.run_attempt = attempt
        self.time_limit = time_limit
        self.delivery_attempt = delivery_attempt
        self.storage_retry = storage_retry
        self.on_progress = on_progress
        self.clock = clock
        self.started = clock()
        self.stop_reason: str | None = None
        self._task_id = task_id
        self._stopped = threading.Event()
        self.outputs = OutputWriter(bucket, task_id, run_id, self.check_alive, storage_retry)

    @property
    def task_id(self) -> str:
        return self._task_id

    @property
    def attempt(self) -> int:
        return self.run_attempt

    @property
    def deadline(self) -> float:
        """Clock time at which the run's time limit runs out."""
        return self.started + self.time_limit

    def stop(self, reason: str) -> None:
        """Ask the run to stop at its next check_alive (the first reason given wins)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def check_alive(self) -> None:
        """Raise if the run must stop: stopped from outside, or past its time limit."""
        if self._stopped.is_set():
            raise RunStopped(self.stop_reason or SHUTDOWN, f"run stopped: {self.stop_reason}")
        self.check_deadline()

    def check_deadline(self) -> None:
        """Raise TaskTimeoutError if the run is past its time limit."""
        if self.clock() > self.deadline:
            raise TaskTimeoutError(f"task exceeded its time limit of {self.time_limit:g}s")

    def sleep(self, seconds: float) -> None:
        """Wait (simulated work), waking early to raise when the run must stop."""
        end = self.clock() + seconds
        while True:
            self.check_alive()
            remaining = min(end, self.deadline + 0.001) - self.clock()
            if remaining <= 0:
                self.check_alive()
                return
            self._wait(remaining)

    def _wait(self, seconds: float) -> None:
        self._stopped.wait(seconds)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the run is; recorded at most once a second."""
        if not (isinstance(fraction, int | float) and math.isfinite(fraction)):
            raise ValueError(f"progress must be a number from 0 to 1, not {fraction!r}")
        if self.on_progress is not None:
            text = message[:200] if message else None
            self.on_progress(Progress(fraction=min(1.0, max(0.0, float(fraction))), message=text))

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
