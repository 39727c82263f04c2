"""The handler's view of its task: the interface the worker implements (and the test helper).

A handler is `fn(ctx: TaskContext, payload) -> None`. It reads inputs and writes outputs only
through ctx, calls `ctx.check_alive()` (or `ctx.sleep()`) in long loops so that time limits,
cancellation and shutdown can stop it, and raises PermanentTaskError for what a retry cannot fix.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskcore.outputs import OutputWriter
    from taskcore.settings import Settings


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
