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

from taskcore.errors import TaskTimeoutError, TransientTaskError
from taskcore.inputs import InputStream, open_input
from taskcore.outputs import OutputWriter
from taskcore.status import Progress

if TYPE_CHECKING:
    from google.cloud import storage

    from taskcore.settings import Settings

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
    def open_input(self, uri: str) -> InputStream:
        """An input object of the pipeline's bucket as a binary stream (.content_type, .size)."""

    @abc.abstractmethod
    def read_input(self, uri: str) -> tuple[bytes, str]:
        """Bytes and content type of a small input object in the pipeline's bucket."""

    @abc.abstractmethod
    def check_alive(self) -> None:
        """Raise if the run must stop: past its time limit, cancelled, or shutting down."""

    @abc.abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait, waking early to raise when the run must stop."""

    @abc.abstractmethod
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the run is (0.0 to 1.0), visible in GET /tasks/<id>; raises, like
        check_alive(), when the run must stop."""


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
        pinned_inputs: dict[str, int] | None = None,
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
        # Input URI → the generation the API saw at submission: exactly what is read.
        self.pinned_inputs = dict(pinned_inputs or {})
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
        """Report how far the run is (recorded at most once a second); like check_alive(),
        raise if the run must stop."""
        if not (isinstance(fraction, int | float) and math.isfinite(fraction)):
            raise ValueError(f"progress must be a number from 0 to 1, not {fraction!r}")
        self.check_alive()
        if self.on_progress is not None:
            text = message[:200] if message else None
            self.on_progress(Progress(fraction=min(1.0, max(0.0, float(fraction))), message=text))

    def open_input(self, uri: str) -> InputStream:
        """Stream an input object of the pipeline's bucket (the generation submitted, if pinned)."""
        self.check_alive()
        return open_input(
            self.bucket,
            uri,
            self.settings,
            generation=self.pinned_inputs.get(uri),
            retry=self.storage_retry,
            on_read=self.check_alive,
        )

    def read_input(self, uri: str) -> tuple[bytes, str]:
        """Bytes and content type of a (small) input object; prefer open_input for large ones."""
        with self.open_input(uri) as stream:
            return stream.readall(), stream.content_type
