"""The execution's memory budget: what it may use, and how much of it running tasks hold.

The budget is WORKER_MEMORY_MB when set, else the container's memory limit (cgroup v2
memory.max or v1 memory.limit_in_bytes of this process's own cgroup), else the machine's
memory. Every task reserves its type's memory (`@task(memory_mb=...)`, TASK_MEMORY_MB by
default) before it runs, and the worker pulls no more messages than the free budget has room
for: a Cloud Run task with 1 GiB runs as many tasks as fit in 1 GiB, not WORKER_CONCURRENCY.
A task isolated in a child process also reserves the child's own interpreter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# cgroup v1 says "no limit" with a huge number.
_UNLIMITED = 1 << 60
# Kept free: the interpreter's own growth, buffers, the GC's slack.
HEADROOM_FRACTION = 0.1
# What a child process for an isolated task costs before its task allocates anything.
CHILD_OVERHEAD_MB = 80


def cgroup_memory_limit(
    proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup"
) -> int | None:
    """This process's cgroup memory limit in bytes (v2 or v1), or None when there is none."""
    try:
        lines = Path(proc_root, "self", "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if hierarchy == "0" and controllers == "":  # v2: the unified hierarchy
            candidate = Path(cgroup_root, relative, "memory.max")
        elif "memory" in controllers.split(","):  # v1: the memory controller
            candidate = Path(cgroup_root, "memory", relative, "memory.limit_in_bytes")
        else:
            continue
        try:
            raw = candidate.read_text().strip()
        except OSError:
            continue
        if raw and raw != "max" and int(raw) < _UNLIMITED:
            return int(raw)
    return None


def machine_memory() -> int:
    """Physical memory of the machine, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (this one by default), in bytes; 0 if it is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class MemoryBudget:
    """Reservations of task memory against the execution's budget."""

    def __init__(self, limit_bytes: int, baseline_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.baseline_bytes = baseline_bytes
        self.usable_bytes = max(0, int(limit_bytes * (1 - HEADROOM_FRACTION)) - baseline_bytes)
        self._reserved = 0
        self._freed = threading.Condition()

    @classmethod
    def for_settings(cls, worker_memory_mb: int) -> MemoryBudget:
        """The budget: WORKER_MEMORY_MB, else the cgroup limit, else the machine's memory."""
        if worker_memory_mb:
            limit, source = worker_memory_mb * MIB, "WORKER_MEMORY_MB"
        else:
            limit = cgroup_memory_limit()
            source = "cgroup limit"
            if limit is None:
                limit, source = machine_memory(), "machine memory"
        budget = cls(limit, resident_bytes())
        # Every execution, idle ones included, would print it: DEBUG (LOG_LEVEL=DEBUG shows it).
        log.debug(
            "memory budget %d MiB (%s), %d MiB usable by tasks",
            limit // MIB,
            source,
            budget.usable_bytes // MIB,
            extra={"json_fields": {"memory_limit_mb": limit // MIB, "source": source}},
        )
        return budget

    @property
    def free_bytes(self) -> int:
        with self._freed:
            return self.usable_bytes - self._reserved

    def slots(self, per_task_mb: int) -> int:
        """How many more tasks of per_task_mb fit now."""
        return max(0, self.free_bytes // max(1, per_task_mb * MIB))

    def reserve(self, mb: int, stop: threading.Event, timeout: float | None = None) -> bool:
        """Wait until mb fits, then hold it; False if stopped (or timed out) meanwhile.

        A single task bigger than the whole budget is let through alone (when nothing else
        holds any), so it runs, in isolation if need be, rather than waiting forever.
        """
        wanted = mb * MIB
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._freed:
            while True:
                if self._reserved + wanted <= self.usable_bytes or self._reserved == 0:
                    self._reserved += wanted
                    return True
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    return False
                self._freed.wait(0.25)

    def release(self, mb: int) -> None:
        with self._freed:
            self._reserved = max(0, self._reserved - mb * MIB)
            self._freed.notify_all()

    @property
    def reserved_mb(self) -> int:
        with self._freed:
            return self._reserved // MIB
