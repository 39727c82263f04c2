"""The task registries tests run with."""

from __future__ import annotations

from taskcore.tasks import TaskRegistry, load_task_modules


def builtin_registry() -> TaskRegistry:
    """The built-in task types (example_tasks), as the default TASK_MODULES loads them."""
    return load_task_modules(("example_tasks",))
