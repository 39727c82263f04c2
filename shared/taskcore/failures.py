"""What an exception raised by a run means: permanent, transient, or not the task's fault.

- PermanentTaskError (and what a task type declares with `@task(permanent=...)`): no retry
  can fix it; the task is dead-lettered at once.
- Errors its own data causes deterministically (a value that does not parse, a ragged CSV, a
  number too large, nesting too deep): permanent too, as `data_error`; a retry would only
  fail the same way five times.
- MemoryError: `resource_exhausted`, retried until the task's attempts run out.
- Storage or Pub/Sub unreachable past retries: `infrastructure`, not the task's failure; the
  message goes back without counting against the task.
- Anything else (I/O errors, timeouts, TransientTaskError): transient, retried with backoff.
"""

from __future__ import annotations

import csv
import enum
import traceback
from dataclasses import dataclass

import requests
from google.api_core import exceptions as gexc

from taskcore.errors import (
    InfrastructureError,
    PermanentTaskError,
    StatusConflictError,
    TaskError,
    TransientTaskError,
)

# Deterministic in the task's own data: the same input fails the same way every time.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes UnicodeError and json.JSONDecodeError
    TypeError,
    ArithmeticError,  # OverflowError, ZeroDivisionError, FloatingPointError
    LookupError,  # KeyError, IndexError
    RecursionError,
    csv.Error,
    gexc.BadRequest,  # the service refused what the task asked for (an invalid name, say)
)

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    InfrastructureError,
    StatusConflictError,
    gexc.RetryError,
    gexc.ServiceUnavailable,
    requests.ConnectionError,
    ConnectionError,
)


class Kind(enum.StrEnum):
    """How the worker treats a failed run."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    INFRASTRUCTURE = "infrastructure"


@dataclass(frozen=True)
class Failure:
    """A failed run, classified: its kind, a stable error_type and a message for operators."""

    kind: Kind
    error_type: str
    message: str

    @property
    def permanent(self) -> bool:
        return self.kind == Kind.PERMANENT


def classify(exc: BaseException, permanent_errors: tuple[type[BaseException], ...] = ()) -> Failure:
    """The Failure an exception from a run stands for."""
    message = describe(exc)
    if isinstance(exc, TransientTaskError):
        return Failure(Kind.TRANSIENT, exc.error_type, message)
    if isinstance(exc, PermanentTaskError):
        return Failure(Kind.PERMANENT, exc.error_type, message)
    if permanent_errors and isinstance(exc, permanent_errors):
        return Failure(Kind.PERMANENT, type(exc).__name__, message)
    if is_infrastructure_error(exc):
        return Failure(Kind.INFRASTRUCTURE, "infrastructure", message)
    if isinstance(exc, MemoryError):
        return Failure(Kind.TRANSIENT, "resource_exhausted", message)
    if isinstance(exc, TaskError):
        return Failure(Kind.TRANSIENT, exc.error_type, message)
    if isinstance(exc, DATA_ERRORS):
        return Failure(Kind.PERMANENT, "data_error", message)
    return Failure(Kind.TRANSIENT, type(exc).__name__, message)


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether exc means a backing service is unreachable (after retries), not the task failing."""
    return isinstance(exc, INFRASTRUCTURE_ERRORS)


def describe(exc: BaseException, limit: int = 2000) -> str:
    """The error for an operator: our own errors by their message, others with where they rose."""
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, TaskError):
        frames = traceback.extract_tb(exc.__traceback__)[-1:]
        where = "".join(f" at {f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames)
        text = f"{type(exc).__name__}: {text}{where}"
    return text[:limit]
