"""Task handlers by task_type.

A handler is `fn(ctx: TaskContext, payload) -> None`: it reads inputs through ctx,
writes outputs through ctx.outputs (create-only, keyed by task_id), and raises
PermanentTaskError for what a retry cannot fix. Any other exception is transient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from background_worker.context import TaskContext

Handler = Callable[[TaskContext, Any], None]


class HandlerRegistry:
    """Handlers by task_type name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, task_type: str, handler: Handler) -> Handler:
        """Register handler for task_type (replacing any earlier one)."""
        self._handlers[task_type] = handler
        return handler

    def handler(self, task_type: str) -> Callable[[Handler], Handler]:
        """Decorator form of register."""
        return lambda fn: self.register(task_type, fn)

    def get(self, task_type: str) -> Handler | None:
        """The handler for task_type, or None."""
        return self._handlers.get(task_type)

    def names(self) -> list[str]:
        """Task types that have a handler."""
        return sorted(self._handlers)


def default_handlers() -> HandlerRegistry:
    """The built-in handlers for the built-in task types."""
    from background_worker.handlers.data_transformation import transform_data
    from background_worker.handlers.file_processing import process_file

    registry = HandlerRegistry()
    registry.register("file_processing", process_file)
    registry.register("data_transformation", transform_data)
    return registry
