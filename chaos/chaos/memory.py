"""Memory limits for worker executions, enforced as the kernel would enforce Cloud Run's.

Where the machine allows it each execution runs in its own memory cgroup (v1 or v2), so a
limit is the kernel's: past it, the OOM killer SIGKILLs the process in the middle of an
allocation, and the cgroup counts the kill. Elsewhere (no writable cgroup) an
`RssWatchdog` reads each limited process's resident set from /proc every few milliseconds
and SIGKILLs it once it passes its limit, as the OOM killer would.

    control = memory_control("auto")        # CgroupMemory where possible, else RssWatchdog
    box = control.prepare("exec-00001")
    proc = subprocess.Popen(control.command(box, argv), ...)
    control.attach(box, proc.pid)
    control.set_limit(box, control.usage(box) + 2**20)  # OOM at its next megabyte
    ...
    control.oom_killed(box); control.release(box); control.close()

Lowering a cgroup v1 limit below what the process already uses fails (EBUSY: v1 reclaims
but never kills on a write), and v2 kills at once; so a limit meant to fire "soon" is set a
little above the current usage, and the process is killed when it next grows.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import os
import resource
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from chaos.cgroups import CGROUP_V1, CGROUP_V2, CgroupLayout, find_memory_cgroup

log = logging.getLogger(__name__)

# How often the RSS watchdog reads /proc; an allocation burst can overshoot by this much time.
WATCHDOG_INTERVAL = 0.01
_PAGE_SIZE = resource.getpagesize()
# Moves the shell into the cgroup, then becomes the command, so the command's pid is the one
# in the cgroup from its first instruction ($0 is the cgroup.procs path).
_JOIN_CGROUP = 'echo $$ > "$0" && exec "$@"'


@dataclass
class MemoryBox:
    """One execution's place under memory control."""

    name: str
    pid: int | None = None
    pidfd: int | None = None
    limit_bytes: int | None = None
    cgroup: Path | None = None
    killed_by_watchdog: bool = False


class MemoryControl(abc.ABC):
    """Puts executions under a memory limit and reports whether the limit killed them."""

    mechanism: str

    @abc.abstractmethod
    def prepare(self, name: str) -> MemoryBox:
        """A box for one execution, before it starts."""

    def command(self, box: MemoryBox, argv: list[str]) -> list[str]:
        """argv to start instead of argv, so the process starts inside its box."""
        return list(argv)

    def attach(self, box: MemoryBox, pid: int) -> None:
        """The execution started as pid."""
        box.pid = pid

    @abc.abstractmethod
    def usage(self, box: MemoryBox) -> int:
        """Bytes the execution uses now, as its limit counts them."""

    @abc.abstractmethod
    def set_limit(self, box: MemoryBox, limit_bytes: int) -> None:
        """Kill the execution once it uses more than limit_bytes."""

    @abc.abstractmethod
    def oom_killed(self, box: MemoryBox) -> bool:
        """Whether the limit killed the execution."""

    @abc.abstractmethod
    def release(self, box: MemoryBox) -> None:
        """The execution has ended and been reaped: forget it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Undo everything prepared (every box released first)."""


class CgroupMemory(MemoryControl):
    """One memory cgroup per execution, under a group of this process's own."""

    def __init__(self, parent: Path, layout: CgroupLayout) -> None:
        self.layout = layout
        self.mechanism = layout.mechanism
        self.group = parent / f"chaos-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if layout is CGROUP_V2:
            _hand_down_memory(parent)
        sweep_orphaned_groups(parent)
        self.group.mkdir()
        try:
            if layout is CGROUP_V2:
                _hand_down_memory(self.group)
            probe = self.prepare("probe")
            try:
                self._write(probe.cgroup / layout.limit_file, layout.unlimited)
            finally:
                self.release(probe)
        except OSError:
            self.close()
            raise

    def prepare(self, name: str) -> MemoryBox:
        path = self.group / name
        path.mkdir()
        return MemoryBox(name=name, cgroup=path)

    def command(self, box: MemoryBox, argv: list[str]) -> list[str]:
        return ["/bin/sh", "-c", _JOIN_CGROUP, str(box.cgroup / "cgroup.procs"), *argv]

    def usage(self, box: MemoryBox) -> int:
        return int((box.cgroup / self.layout.usage_file).read_text())

    def set_limit(self, box: MemoryBox, limit_bytes: int) -> None:
        # Without the swap limit, a machine with swap would page the execution out instead of
        # killing it. v1 keeps memory <= memory+swap at every write (EINVAL otherwise), so a
        # limit that rises (a second fault on one execution) raises memory+swap first.
        swap = box.cgroup / self.layout.swap_limit_file
        swap_value = str(limit_bytes) if self.layout is CGROUP_V1 else "0"
        rising = box.limit_bytes is not None and limit_bytes > box.limit_bytes
        if rising and self.layout is CGROUP_V1 and swap.exists():
            with contextlib.suppress(OSError):
                self._write(swap, swap_value)
        self._write(box.cgroup / self.layout.limit_file, str(limit_bytes))
        if swap.exists():
            with contextlib.suppress(OSError):
                self._write(swap, swap_value)
        box.limit_bytes = limit_bytes

    def oom_killed(self, box: MemoryBox) -> bool:
        try:
            events = (box.cgroup / self.layout.events_file).read_text()
        except OSError:
            return False
        counts = dict(line.split() for line in events.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def release(self, box: MemoryBox) -> None:
        _remove_cgroup(box.cgroup)

    def close(self) -> None:
        for child in self.group.iterdir() if self.group.exists() else ():
            if child.is_dir():
                _remove_cgroup(child)
        _remove_cgroup(self.group)

    @staticmethod
    def _write(path: Path, value: str) -> None:
        # One write(2) call: cgroup files take a value per write, not a stream.
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


def sweep_orphaned_groups(parent: Path) -> list[int]:
    """Kill what a crashed runner left in its groups, remove the groups; the pids killed.

    A runner killed outright cannot reap its executions; their cgroups still name them.
    Groups are named chaos-<runner pid>-<token>: only those whose runner is gone are swept.
    """
    killed = []
    for group in parent.glob("chaos-*-*"):
        try:
            runner_pid = int(group.name.split("-")[1])
        except ValueError:
            continue
        if _alive(runner_pid):
            continue
        for child in [c for c in group.iterdir() if c.is_dir()]:
            procs = child / "cgroup.procs"
            with contextlib.suppress(OSError):
                for pid in map(int, procs.read_text().split()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            _remove_cgroup(child)
        _remove_cgroup(group)
    return killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _hand_down_memory(group: Path) -> None:
    """Give a v2 group's children the memory controller (a no-op where they have it)."""
    control = group / "cgroup.subtree_control"
    if "memory" not in control.read_text().split():
        CgroupMemory._write(control, "+memory")


def _remove_cgroup(path: Path | None) -> None:
    """rmdir a cgroup; the kernel may need a moment after its last process is reaped."""
    if path is None:
        return
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                break
            time.sleep(0.02)
    log.warning("could not remove cgroup %s", path)


class RssWatchdog(MemoryControl):
    """SIGKILLs a limited process once its resident set passes the limit (no cgroup needed)."""

    mechanism = "rss-watchdog"

    def __init__(self, interval: float = WATCHDOG_INTERVAL) -> None:
        self.interval = interval
        self._boxes: set[int] = set()
        self._watched: dict[int, MemoryBox] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prepare(self, name: str) -> MemoryBox:
        return MemoryBox(name=name)

    def attach(self, box: MemoryBox, pid: int) -> None:
        box.pid = pid
        # A pidfd names this process and no later one that reuses the pid.
        box.pidfd = os.pidfd_open(pid)
        if box.limit_bytes is not None:  # a limit set before the start
            self._watch_box(box)

    def usage(self, box: MemoryBox) -> int:
        return resident_bytes(box.pid)

    def set_limit(self, box: MemoryBox, limit_bytes: int) -> None:
        box.limit_bytes = limit_bytes
        if box.pid is not None:
            self._watch_box(box)

    def _watch_box(self, box: MemoryBox) -> None:
        with self._lock:
            self._watched[id(box)] = box
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="rss-watchdog", daemon=True
                )
                self._thread.start()
        self._check(box)

    def oom_killed(self, box: MemoryBox) -> bool:
        return box.killed_by_watchdog

    def release(self, box: MemoryBox) -> None:
        with self._lock:
            self._watched.pop(id(box), None)
            if box.pidfd is not None:
                os.close(box.pidfd)
                box.pidfd = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                boxes = list(self._watched.values())
            for box in boxes:
                self._check(box)

    def _check(self, box: MemoryBox) -> None:
        with self._lock:
            if box.pidfd is None or box.killed_by_watchdog or box.limit_bytes is None:
                return
            try:
                rss = resident_bytes(box.pid)
            except OSError:
                return  # already gone
            if rss <= box.limit_bytes:
                return
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(box.pidfd, signal.SIGKILL)
            box.killed_by_watchdog = True
        log.info("rss watchdog: killed %s at %d bytes (limit %d)", box.name, rss, box.limit_bytes)


def resident_bytes(pid: int) -> int:
    """Resident set size of pid, from /proc/<pid>/statm."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def memory_control(preference: str = "auto") -> MemoryControl:
    """`cgroup` (or fail), `rss` (the watchdog), or `auto`: a cgroup if possible, else the watchdog."""
    if preference not in ("auto", "cgroup", "rss"):
        raise ValueError(f"memory control must be auto, cgroup or rss, not {preference!r}")
    if preference == "rss":
        return RssWatchdog()
    try:
        found = find_memory_cgroup(
            Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text()
        )
        if found is None:
            raise OSError(errno.ENOENT, "no memory cgroup controller is mounted")
        control = CgroupMemory(*found)
    except OSError as exc:
        if preference == "cgroup":
            raise
        log.info("memory limits by RSS watchdog: no usable memory cgroup (%s)", exc)
        return RssWatchdog()
    log.info("memory limits by %s under %s", control.mechanism, control.group)
    return control
