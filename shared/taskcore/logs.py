"""Structured logging: one JSON line per record, as Cloud Logging reads them.

Records carry severity and message, plus task_id/task_type/delivery_attempt when they
are logged inside `task_context`, plus any fixed fields (the Cloud Run execution).

The lines are google-cloud-logging's StructuredLogHandler format without what it writes on
every line whether or not it has a value (empty trace, span and httpRequest, the logger's
name, the source file and line): an idle worker execution is one short line, not three of
~700 characters. Source location and logger name stay on warnings and errors, where they
help to find the code; trace and httpRequest appear whenever a request has them.
"""

from __future__ import annotations

import collections.abc
import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import google.cloud.logging_v2
from google.cloud.logging_v2.handlers import StructuredLogHandler
from google.cloud.logging_v2.handlers.handlers import _format_and_parse_message
from google.cloud.logging_v2.handlers.structured_log import GCP_STRUCTURED_LOGGING_FIELDS

_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_task_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "task_fields", default=_NO_FIELDS
)
# Cloud Logging's own keys (lifted out of jsonPayload into the entry).
TRACE = "logging.googleapis.com/trace"
SPAN_ID = "logging.googleapis.com/spanId"
TRACE_SAMPLED = "logging.googleapis.com/trace_sampled"
LABELS = "logging.googleapis.com/labels"
SOURCE_LOCATION = "logging.googleapis.com/sourceLocation"


class _ContextFieldsFilter(logging.Filter):
    """Merges the fixed fields and the current task's fields into each record's json_fields."""

    def __init__(self, fixed: Mapping[str, Any]) -> None:
        super().__init__()
        self.fixed = dict(fixed)

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {**self.fixed, **_task_fields.get(), **getattr(record, "json_fields", {})}
        record.json_fields = {k: v for k, v in fields.items() if v is not None}
        return True


class CompactStructuredLogHandler(StructuredLogHandler):
    """StructuredLogHandler's JSON lines, keeping only the Cloud Logging keys that say something."""

    def format(self, record: logging.LogRecord) -> str:
        # The message formatted as StreamHandler would (with any traceback), or a mapping.
        parsed = _format_and_parse_message(record, super(StructuredLogHandler, self))
        entry: dict[str, Any] = {"severity": record.levelname}
        if isinstance(parsed, collections.abc.Mapping):
            payload = {k: v for k, v in parsed.items() if k not in GCP_STRUCTURED_LOGGING_FIELDS}
            message = payload.pop("message", None)
            if message is not None:
                entry["message"] = message
            entry.update(payload)
        elif parsed:
            entry["message"] = parsed
        # Set by this handler's CloudLoggingFilter (from the request, when there is one).
        if record._trace:
            entry[TRACE] = record._trace
            if record._span_id:
                entry[SPAN_ID] = record._span_id
            entry[TRACE_SAMPLED] = record._trace_sampled
        if record._http_request:
            entry["httpRequest"] = record._http_request
        if record.levelno >= logging.WARNING:
            if record._labels:
                entry[LABELS] = record._labels
            if record._source_location:
                entry[SOURCE_LOCATION] = record._source_location
        return json.dumps(
            entry, ensure_ascii=False, separators=(",", ":"), cls=self._json_encoder_cls
        )


def configure_logging(
    level: str = "INFO",
    fixed_fields: Mapping[str, Any] | None = None,
    stream=None,
    project_id: str | None = None,
) -> None:
    """Route the root logger to one CompactStructuredLogHandler writing JSON lines."""
    # The library writes a diagnostic line (its own name and version, ~500 characters) once
    # per process, for Google's usage statistics; in a job that runs every few minutes it is
    # most of what an idle execution prints. Nothing of ours reads it.
    google.cloud.logging_v2._instrumentation_emitted = True
    # With the project id, Cloud Run's trace header links request logs to their trace.
    handler = CompactStructuredLogHandler(stream=stream or sys.stdout, project_id=project_id)
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
