"""Task types that misbehave on purpose, for the tests of bounded memory and CPU.

Loaded by worker processes in tests with TASK_MODULES=example_tasks,tests.task_modules.misbehaving.
"""

from __future__ import annotations

from taskcore import TaskPayload, task

MIB = 1024 * 1024


class Appetite(TaskPayload):
    megabytes: int = 1536


def _eat(ctx, megabytes: int) -> list[bytes]:
    eaten = []
    for _ in range(megabytes):
        eaten.append(b"\x01" * MIB)  # written, so every page is really resident
        ctx.check_alive()
    return eaten


@task("memory_hog")
def memory_hog(ctx, payload: Appetite) -> None:
    """Allocates far more than any budget, on the execution's own threads."""
    _eat(ctx, payload.megabytes)
    ctx.outputs.write_json("ate.json", {"megabytes": payload.megabytes})


@task("isolated_memory_hog", isolated=True, memory_mb=64)
def isolated_memory_hog(ctx, payload: Appetite) -> None:
    """The same appetite, declared isolated: its own process, its own 64 MiB budget."""
    _eat(ctx, payload.megabytes)


class Spin(TaskPayload):
    seconds: float = 60


@task("cpu_spinner", isolated=True, time_limit=2)
def cpu_spinner(ctx, payload: Spin) -> None:
    """CPU-bound work that never checks its deadline: only killing its process stops it."""
    import time

    end = time.monotonic() + payload.seconds
    total = 0
    while time.monotonic() < end:
        total += 1


@task("isolated_crasher", isolated=True, time_limit=60)
def isolated_crasher(ctx, payload: TaskPayload) -> None:
    """Its process ends at once without a result, as a segfault or an abort would end it."""
    import os

    os._exit(3)
