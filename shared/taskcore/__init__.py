"""taskcore: what the submit API and the job worker share, and what a task module needs.

A task module depends on this package only:

    from taskcore import PermanentTaskError, TaskPayload, task

Also here: settings, the task envelope, the task registry, the handler context interface and
output writer, client factories, structured logs, status records, errors, publishing, dead
letters and the dead-letter operations (scan, replay, purge, audit).
"""

from __future__ import annotations

from taskcore.context import TaskContext
from taskcore.errors import PermanentTaskError, TransientTaskError
from taskcore.payloads import InputUri, TaskPayload
from taskcore.tasks import TaskType, task

__all__ = [
    "InputUri",
    "PermanentTaskError",
    "TaskContext",
    "TaskPayload",
    "TaskType",
    "TransientTaskError",
    "task",
]
