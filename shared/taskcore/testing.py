"""Testing a task type without an emulator: run its handler on a payload, in memory.

    from taskcore.testing import run_task
    from myapp.tasks import word_count

    def test_word_count_counts_words():
        run = run_task(word_count, text="a b c")
        assert run.succeeded
        assert run.json("count.json") == {"words": 3}

    def test_word_count_can_fail_for_good():
        run = run_task(word_count, text="x", fail=True)
        assert run.failure.permanent and "asked to fail" in run.failure.message

`run_task` validates the fields with the task's own payload model (as the API would), runs
the handler against an in-memory bucket holding `inputs`, and returns what it wrote. Failures
come back classified the way the worker classifies them (permanent, transient, ...), so a test
can say what the worker would do. `ctx.sleep()` does not wait: it moves a virtual clock, and
the task's time limit is checked against that clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskcore.context import RunContext
from taskcore.failures import Failure, classify
from taskcore.memory_bucket import MemoryBucket
from taskcore.payloads import TaskPayload
from taskcore.settings import Settings
from taskcore.status import Progress
from taskcore.tasks import TaskRegistry, TaskType


@dataclass
class TaskRun:
    """What one run of a handler did."""

    task_id: str
    outputs: dict[str, bytes] = field(default_factory=dict)
    content_types: dict[str, str] = field(default_factory=dict)
    progress: list[Progress] = field(default_factory=list)
    failure: Failure | None = None
    exception: BaseException | None = None
    slept_seconds: float = 0.0
    bucket: MemoryBucket | None = None

    @property
    def succeeded(self) -> bool:
        return self.failure is None

    def text(self, name: str) -> str:
        """An output as UTF-8 text."""
        return self.outputs[name].decode("utf-8")

    def json(self, name: str) -> Any:
        """An output parsed as JSON."""
        return json.loads(self.outputs[name])

    def raise_failure(self) -> None:
        """Re-raise what the handler raised, if anything (to see its traceback)."""
        if self.exception is not None:
            raise self.exception


class _VirtualClock:
    """Real time plus whatever `ctx.sleep()` skipped."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


class _TestContext(RunContext):
    def __init__(self, clock: _VirtualClock, **kwargs) -> None:
        super().__init__(clock=clock, **kwargs)
        self._virtual = clock

    def _wait(self, seconds: float) -> None:
        self._virtual.skipped += seconds


def input_uri(name: str, settings: Settings | None = None) -> str:
    """The gs:// URI run_task's bucket gives an input put there by name (e.g. "uploads/a.txt")."""
    return f"gs://{(settings or Settings.from_env({})).bucket_name}/{name}"


def run_task(
    task: Any,
    payload: TaskPayload | Mapping[str, Any] | None = None,
    /,
    *,
    inputs: Mapping[str, bytes | str | tuple[bytes, str]] | None = None,
    bucket: MemoryBucket | None = None,
    settings: Settings | None = None,
    task_id: str = "test-task",
    attempt: int = 1,
    time_limit: float | None = None,
    **fields: Any,
) -> TaskRun:
    """Run a @task handler (or TaskType) once on a payload and return what it wrote.

    payload: a payload model instance, or a mapping of fields (or give the fields as keyword
    arguments); they are validated with the task's model. inputs: objects to put in the
    bucket first, by name (e.g. "uploads/report.csv"), as bytes, text or (bytes, content type).
    """
    task_type = _task_type(task)
    model = _payload(task_type, payload, fields)
    settings = settings or Settings.from_env({})
    bucket = bucket or MemoryBucket(settings.bucket_name)
    for name, value in (inputs or {}).items():
        data, content_type = value if isinstance(value, tuple) else (value, None)
        bucket.blob(name).upload_from_string(
            data, content_type=content_type or _guess_type(name, data)
        )
    run = TaskRun(task_id=task_id, bucket=bucket)
    clock = _VirtualClock()
    ctx = _TestContext(
        clock,
        settings=settings,
        bucket=bucket,
        task_id=task_id,
        run_id=f"{attempt}-test",
        attempt=attempt,
        time_limit=time_limit or task_type.time_limit_seconds or settings.task_timeout_seconds,
        on_progress=run.progress.append,
    )
    try:
        task_type.handler(ctx, model)
        ctx.check_deadline()
    except Exception as exc:
        run.exception = exc
        run.failure = classify(exc, task_type.permanent_errors)
    for ref in ctx.outputs.written:
        run.outputs[ref.name] = bucket.blob(ref.uri.split("/", 3)[3]).download_as_bytes()
        run.content_types[ref.name] = ref.content_type or ""
    run.slept_seconds = clock.skipped
    return run


def _task_type(task: Any) -> TaskType:
    if isinstance(task, TaskType):
        return task
    declared = getattr(task, "task_type", None)
    if isinstance(declared, TaskType):
        return declared
    raise TypeError(f"{task!r} is not a @task handler or a TaskType")


def _payload(task_type: TaskType, payload, fields: Mapping[str, Any]) -> TaskPayload:
    if isinstance(payload, TaskPayload):
        if fields:
            raise TypeError("give the payload as a model or as fields, not both")
        return payload
    # Judged exactly as the API judges a submission: InvalidTaskError lists the field errors.
    return TaskRegistry([task_type]).validate_payload(task_type.name, {**(payload or {}), **fields})


def _guess_type(name: str, data: bytes | str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith((".csv", ".txt", ".jsonl", ".md")) or isinstance(data, str):
        return "text/plain"
    return "application/octet-stream"
