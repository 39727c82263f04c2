"""Structured logging: one JSON line per record, as Cloud Logging reads them.

Records carry severity and message, plus task_id/task_type/delivery_attempt when they
are logged inside `task_context`, plus any fixed fields (the Cloud Run execution).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from google.cloud.logging_v2.handlers import StructuredLogHandler

_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_task_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "task_fields", default=_NO_FIELDS
)


class _ContextFieldsFilter(logging.Filter):
    """Merges the fixed fields and the current task's fields into each record's json_fields."""

    def __init__(self, fixed: Mapping[str, Any]) -> None:
        super().__init__()
        self.fixed = dict(fixed)

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {**self.fixed, **_task_fields.get(), **getattr(record, "json_fields", {})}
        record.json_fields = {k: v for k, v in fields.items() if v is not None}
        return True


def configure_logging(
    level: str = "INFO",
    fixed_fields: Mapping[str, Any] | None = None,
    stream=None,
    project_id: str | None = None,
) -> None:
    """Route the root logger to one StructuredLogHandler writing JSON lines."""
    # With the project id, Cloud Run's trace header links request logs to their trace.
    handler = StructuredLogHandler(stream=stream or sys.stdout, project_id=project_id)
    handler.addFilter(_ContextFieldsFilter(fixed_fields or {}))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, StructuredLogHandler):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # The Google clients are chatty at INFO about retries we already report ourselves.
    for noisy in ("google.api_core", "google.auth", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def task_context(**fields: Any) -> Iterator[None]:
    """Within this block, every log record carries these task fields."""
    token = _task_fields.set({**_task_fields.get(), **fields})
    try:
        yield
    finally:
        _task_fields.reset(token)


def get_logger(name: str) -> logging.Logger:
    """A module logger; the structured handler sits on the root."""
    return logging.getLogger(name)
