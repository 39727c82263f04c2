"""Task declarations and the registry: one `@task` per task type, found by import.

    from taskcore import PermanentTaskError, TaskPayload, task

    class WordCount(TaskPayload):
        text: str

    @task("word_count", time_limit=30)
    def word_count(ctx, payload: WordCount) -> None:
        ctx.outputs.write_json("count.json", {"words": len(payload.text.split())})

The payload model comes from the handler's annotation. The API validates submissions with it,
the worker parses messages with it and calls the handler, and `/openapi.json` documents it:
a task the API accepted is a task the worker understands.

TASK_MODULES lists the modules the API, the worker and taskctl import at start;
`load_task_modules` imports them and returns a `TaskRegistry` of exactly the types they
declare (a package stands for every module in it).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import threading
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from taskcore.errors import InvalidTaskError, TaskModuleError
from taskcore.payloads import TaskPayload
from taskcore.settings import DEFAULT_QUEUE

# Task type names travel in message attributes, metric labels, URLs and queue names.
TASK_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_TASK_NAME = re.compile(TASK_NAME_PATTERN)
# Body keys the API and the envelope give a meaning of their own; a payload cannot use them.
RESERVED_FIELDS = frozenset(
    {
        "task_type",
        "task_id",
        "payload",
        "submitted_at",
        "schema_version",
        "idempotency_key",
        "delay_seconds",
        "run_at",
        "queue",
    }
)

Handler = Callable[[Any, Any], None]


@dataclass(frozen=True)
class TaskType:
    """A declared task type: its name, handler, payload model and options."""

    name: str
    handler: Handler
    payload_model: type[TaskPayload]
    time_limit_seconds: float | None = None
    queue: str = DEFAULT_QUEUE
    description: str = ""
    # Exceptions this type's handler raises that no retry can fix (beyond PermanentTaskError).
    permanent_errors: tuple[type[BaseException], ...] = ()
    module: str = ""
    # Memory one run may use, in MiB (None: TASK_MEMORY_MB); the worker runs no more tasks at
    # once than its budget has room for, and kills an isolated run that goes past it.
    memory_mb: int | None = None
    # Always run in a child process of its own (the worker isolates a task by itself once
    # a run of it died with its execution).
    isolated: bool = False
    # A cron expression: the task runs periodically, with its payload's defaults, in timezone.
    schedule: str | None = None
    timezone: str = "UTC"

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this type's payload."""
        return self.payload_model.model_json_schema()

    @property
    def qualified_handler(self) -> str:
        """module:function of the handler, as logs and errors name it."""
        return f"{self.handler.__module__}:{self.handler.__qualname__}"


# Every @task declaration made in this process, by name.
_declared: dict[str, TaskType] = {}
_declared_lock = threading.Lock()


def task(
    name: str | None = None,
    *,
    time_limit: float | None = None,
    queue: str | None = None,
    description: str | None = None,
    permanent: Iterable[type[BaseException]] = (),
    memory_mb: int | None = None,
    isolated: bool = False,
    schedule: str | None = None,
    timezone: str = "UTC",
) -> Callable[[Handler], Handler]:
    """Declare the decorated function as the handler of task type `name` (default: its name).

    time_limit: seconds one run may take (default TASK_TIMEOUT_SECONDS);
    queue: the queue its tasks are routed to (default "default");
    description: shown by /task-types and /docs (default: the docstring's first paragraph);
    permanent: exception types that mean a retry cannot help (dead-lettered at once);
    memory_mb: the memory one run may use (default TASK_MEMORY_MB);
    isolated: run each run in a child process of its own (CPU-bound or untrusted code);
    schedule, timezone: run it periodically (cron, e.g. "0 3 * * *" in "Europe/Paris"), with
    its payload's defaults; each firing is a task whose id names the firing.
    """

    def decorate(fn: Handler) -> Handler:
        declared = TaskType(
            name=name or fn.__name__,
            handler=fn,
            payload_model=_payload_model(fn),
            time_limit_seconds=_time_limit(time_limit),
            queue=queue or DEFAULT_QUEUE,
            description=description if description is not None else _summary(fn),
            permanent_errors=_exception_types(permanent),
            module=fn.__module__,
            memory_mb=_memory(memory_mb),
            isolated=bool(isolated),
            schedule=schedule,
            timezone=timezone,
        )
        check_task_type(declared)
        _declare(declared)
        fn.task_type = declared  # type: ignore[attr-defined]
        return fn

    return decorate


def check_task_type(task_type: TaskType) -> None:
    """Raise TypeError (at import, naming the handler) for a declaration that cannot work."""
    where = task_type.qualified_handler
    if not _TASK_NAME.fullmatch(task_type.name):
        raise TypeError(f"{where}: task name {task_type.name!r} must match {TASK_NAME_PATTERN}")
    if not re.fullmatch(r"^[a-z][a-z0-9-]{0,30}$", task_type.queue):
        raise TypeError(
            f"{where}: queue {task_type.queue!r} must be lower-case letters, digits or '-'"
        )
    clash = RESERVED_FIELDS & set(task_type.payload_model.model_fields)
    if clash:
        raise TypeError(f"{where}: payload fields {sorted(clash)} are reserved by the API")
    if task_type.schedule is not None:
        _check_schedule(task_type, where)


def _check_schedule(task_type: TaskType, where: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from croniter import croniter

    if not croniter.is_valid(task_type.schedule):
        raise TypeError(f"{where}: schedule {task_type.schedule!r} is not a cron expression")
    try:
        ZoneInfo(task_type.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise TypeError(f"{where}: timezone {task_type.timezone!r} is not a time zone") from None
    try:
        task_type.payload_model.model_validate({})
    except ValidationError:
        raise TypeError(
            f"{where}: a periodic task runs with its payload's defaults, but "
            f"{task_type.payload_model.__name__} has required fields"
        ) from None


def _declare(declared: TaskType) -> None:
    with _declared_lock:
        existing = _declared.get(declared.name)
        if existing is not None and existing.qualified_handler != declared.qualified_handler:
            raise TypeError(
                f"task type {declared.name!r} is declared twice: by "
                f"{existing.qualified_handler} and by {declared.qualified_handler}"
            )
        # The same handler declared again (a module imported twice) replaces itself.
        _declared[declared.name] = declared


def declared_task_types() -> list[TaskType]:
    """Every task type declared in this process so far."""
    with _declared_lock:
        return list(_declared.values())


def _payload_model(fn: Handler) -> type[TaskPayload]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise TypeError(
            f"{fn.__module__}:{fn.__qualname__}: a task handler takes (ctx, payload), "
            f"not {len(params)} parameters"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # a forward reference that does not resolve
        raise TypeError(f"{fn.__module__}:{fn.__qualname__}: {exc}") from exc
    model = hints.get(params[1].name)
    if not (inspect.isclass(model) and issubclass(model, TaskPayload)):
        raise TypeError(
            f"{fn.__module__}:{fn.__qualname__}: annotate the payload parameter "
            f"{params[1].name!r} with a TaskPayload subclass"
        )
    return model


def _time_limit(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise TypeError(f"time_limit must be a positive number of seconds, not {value!r}")
    return float(value) if value is not None else None


def _memory(value: int | None) -> int | None:
    if value is not None and not (isinstance(value, int) and 0 < value <= 65536):
        raise TypeError(f"memory_mb must be a whole number of MiB from 1 to 65536, not {value!r}")
    return value


def _exception_types(types: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    types = tuple(types)
    for kind in types:
        if not (inspect.isclass(kind) and issubclass(kind, BaseException)):
            raise TypeError(f"permanent= takes exception classes, not {kind!r}")
    return types


def _summary(fn: Handler) -> str:
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


class TaskRegistry:
    """Task types by name; the API and the worker each build one from TASK_MODULES."""

    def __init__(self, task_types: Iterable[TaskType] = ()) -> None:
        self._types: dict[str, TaskType] = {}
        for task_type in task_types:
            self.register(task_type)

    def register(self, task_type: TaskType) -> TaskType:
        """Add a task type; a name registers once."""
        if task_type.name in self._types:
            raise ValueError(f"task type {task_type.name!r} is already registered")
        self._types[task_type.name] = task_type
        return task_type

    def with_handlers(self, **handlers: Handler) -> TaskRegistry:
        """A copy in which the named types run other handlers (tests count or break runs).

        Only runs on the worker's threads see them: an isolated run (a suspect retry, or an
        `isolated=True` type) imports TASK_MODULES in its child and runs the original handler.
        """
        unknown = set(handlers) - set(self._types)
        if unknown:
            raise ValueError(f"no task types {sorted(unknown)} to replace the handlers of")
        return TaskRegistry(
            dataclasses.replace(t, handler=handlers.get(t.name, t.handler)) for t in self
        )

    def get(self, name: str) -> TaskType:
        """The task type called `name`, or InvalidTaskError listing the known ones."""
        try:
            return self._types[name]
        except KeyError:
            raise InvalidTaskError(
                f"unknown task_type {name!r}; known types: {', '.join(self.names())}",
                error_type="unknown_task_type",
            ) from None

    def names(self) -> list[str]:
        """Registered task type names, sorted."""
        return sorted(self._types)

    def queues(self) -> list[str]:
        """The queues the registered types route to, sorted."""
        return sorted({t.queue for t in self._types.values()})

    def __iter__(self) -> Iterator[TaskType]:
        return iter(self._types[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def validate_payload(self, name: str, fields: dict[str, Any]) -> TaskPayload:
        """Validate fields against the type's model, raising InvalidTaskError with field errors."""
        task_type = self.get(name)
        try:
            return task_type.payload_model.model_validate(fields)
        except ValidationError as exc:
            details = field_errors(exc)
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
            raise InvalidTaskError(
                f"invalid {name} payload: {summary}", error_type="schema_violation", details=details
            ) from None


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """A pydantic ValidationError as a JSON-friendly list of {field, message, type}."""
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False)
    ]


def load_task_modules(modules: Sequence[str]) -> TaskRegistry:
    """Import each module (a package: every module in it) and register the types they declare.

    TaskModuleError names the module when one cannot be imported or declares no task type.
    """
    imported: list[str] = []
    for name in modules:
        imported.extend(_import_all(name))
    owners = tuple(dict.fromkeys(imported))
    registry = TaskRegistry(t for t in declared_task_types() if t.module in owners)
    for name in modules:
        if not any(_within(t.module, name) for t in registry):
            raise TaskModuleError(f"task module {name!r} declares no task type (no @task in it)")
    return registry


def _import_all(name: str) -> list[str]:
    module = _import(name)
    names = [module.__name__]
    if hasattr(module, "__path__"):  # a package: its modules too
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{module.__name__}."):
            names.append(_import(info.name).__name__)
    return names


def _import(name: str):
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise TaskModuleError(
            f"task module {name!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc


def _within(module: str, name: str) -> bool:
    return module == name or module.startswith(f"{name}.")
