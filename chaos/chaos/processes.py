"""Worker executions as subprocesses, started again as they end, and killed on demand.

    with ExecutionRunner(settings, parallelism=3, seed=7, log_dir=tmp) as runner:
        ...                                        # executions start and restart meanwhile
        runner.inject(ProcessFault.SIGKILL, rng)   # one running execution, chosen by rng
        runner.finish(timeout=30)                  # no new starts; wait for the rest to exit
    for record in runner.records(): ...

The runner plays the job dispatcher (Cloud Scheduler starting Cloud Run Job executions):
it keeps `parallelism` slots, each running one execution at a time (`python -m taskctl
worker` by default) and starting the next one a seeded random `restart_delay` after the
last ended, so 1..parallelism executions run at any moment. Each execution gets the
environment of `settings` (nothing else of the runner's settings leaks in) plus its own
CLOUD_RUN_EXECUTION name.

Process faults (`ProcessFault`): SIGKILL (no clean-up at all), SIGTERM (Cloud Run's stop:
the worker finishes or nacks in-flight work within its grace period), and a memory-limit
kill (the kernel's OOM killer in the execution's memory cgroup, or an RSS watchdog where
cgroups are not available; see chaos.memory). Every execution can also run under a
standing `memory_limit_bytes`, like a Cloud Run Job's memory setting.

Every execution is recorded (`ExecutionRecord`): when it started and ended, its exit code
or signal, what ended it (itself, or which of our faults), when it last did work (a task
outcome in its structured log), and whether it exited within `exit_bound_seconds` of its
last work or of our SIGTERM. When the runner stops, normally or on error, every process
it started has been reaped: still-running executions get SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chaos.executions import Ending, ExecutionRecord, ProcessFault
from chaos.memory import MemoryBox, MemoryControl, memory_control
from taskcore.settings import Settings, env_var_names

log = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "taskctl", "worker")
# Extra room over an execution's current usage for a memory-limit fault: it dies at its next
# allocations of about this much, i.e. while it works.
DEFAULT_OOM_HEADROOM = 2 * 1024 * 1024
_TAIL_LINES = 20
# With every slot busy the dispatcher sleeps until an execution ends, or this long.
_IDLE_WAKEUP = 1.0


@dataclass
class _Running:
    record: ExecutionRecord
    proc: subprocess.Popen
    pidfd: int
    box: MemoryBox
    sent: set[ProcessFault] = field(default_factory=set)
    reader: threading.Thread | None = None


class ExecutionRunner:
    """Runs worker executions in slots and injects process faults; see the module docstring."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        parallelism: int = 2,
        command: Sequence[str] = WORKER_COMMAND,
        seed: int = 0,
        restart_delay: tuple[float, float] = (0.0, 1.0),
        exit_bound_seconds: float = 30.0,
        memory_limit_bytes: int | None = None,
        memory: str | MemoryControl = "auto",
        oom_headroom_bytes: int = DEFAULT_OOM_HEADROOM,
        stop_grace_seconds: float = 10.0,
        log_dir: str | Path | None = None,
        name_prefix: str = "chaos-exec",
        extra_env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        low, high = restart_delay
        if not 0 <= low <= high:
            raise ValueError("restart_delay must be (low, high) with 0 <= low <= high")
        self.parallelism = parallelism
        self.command = list(command)
        self.restart_delay = restart_delay
        self.exit_bound_seconds = exit_bound_seconds
        self.memory_limit_bytes = memory_limit_bytes
        self.oom_headroom_bytes = oom_headroom_bytes
        self.stop_grace_seconds = stop_grace_seconds
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.name_prefix = name_prefix
        self.cwd = cwd
        self._env = _execution_env(settings, extra_env)
        self._rng = random.Random(f"{seed}:restarts")
        self._memory_choice = memory
        self.memory: MemoryControl | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._running: dict[str, _Running] = {}
        self._records: list[ExecutionRecord] = []
        self._next_start = [0.0] * parallelism
        self._slot_busy = [False] * parallelism
        self._sequence = 0
        self._accepting = False
        self._supervisor: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> ExecutionRunner:
        """Start the dispatcher: every slot starts an execution now."""
        if self._supervisor is not None:
            raise RuntimeError("runner already started")
        choice = self._memory_choice
        self.memory = choice if isinstance(choice, MemoryControl) else memory_control(choice)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._accepting = True
        self._supervisor = threading.Thread(
            target=self._supervise, name="execution-dispatcher", daemon=True
        )
        self._supervisor.start()
        return self

    def finish(self, timeout: float) -> bool:
        """Start no more executions and wait for the running ones to exit; True if all did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._accepting = False
            self._changed.notify_all()
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        """Stop everything: no new starts, SIGTERM to the rest, SIGKILL after the grace; reap all."""
        with self._changed:
            self._accepting = False
            self._changed.notify_all()
            leftovers = list(self._running.values())
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
        for running in leftovers:
            if not _has_exited(running):
                self._signal(running, signal.SIGTERM, Ending.RUNNER_STOP)
        deadline = time.monotonic() + self.stop_grace_seconds
        for running in leftovers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for running in leftovers:
            if not _has_exited(running):
                self._signal(running, signal.SIGKILL, Ending.RUNNER_STOP)
            running.proc.wait()
            if running.reader is not None:
                running.reader.join(timeout=10)
        if self.memory is not None:
            self.memory.close()

    def __enter__(self) -> ExecutionRunner:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what happened ---------------------------------------------------------------------
    def records(self) -> list[ExecutionRecord]:
        """Copies of every execution's record so far, in start order."""
        with self._lock:
            return [copy.deepcopy(record) for record in self._records]

    def running(self) -> list[str]:
        """Names of the executions running now."""
        with self._lock:
            return sorted(self._running)

    def wait_for_running(self, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Block until at least count executions run; their names."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._running) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} executions running after {timeout}s")
                self._changed.wait(left)
            return sorted(self._running)

    # --- faults ------------------------------------------------------------------------------
    def inject(
        self,
        fault: ProcessFault | str,
        rng: random.Random | None = None,
        *,
        target: str | None = None,
    ) -> ExecutionRecord | None:
        """Apply fault to target (or one running execution chosen by rng); None if none runs."""
        fault = ProcessFault(fault)
        with self._lock:
            names = sorted(n for n, r in self._running.items() if not _has_exited(r))
            if target is None and names:
                target = (rng or random).choice(names)
            running = self._running.get(target) if target is not None else None
            if running is None or _has_exited(running):
                return None
            running.record.faults.append((fault, time.monotonic()))
            if fault is ProcessFault.MEMORY_LIMIT:
                self._limit_memory(running)
            else:
                sig = signal.SIGKILL if fault is ProcessFault.SIGKILL else signal.SIGTERM
                self._signal(running, sig, None)
            log.info("injected %s into %s", fault, target)
            return copy.deepcopy(running.record)

    def _limit_memory(self, running: _Running) -> None:
        """Limit the execution to a little above what it uses now: it dies as it next grows."""
        for _attempt in range(5):
            limit = self.memory.usage(running.box) + self.oom_headroom_bytes
            if self.memory_limit_bytes is not None:
                limit = min(limit, self.memory_limit_bytes)
            try:
                self.memory.set_limit(running.box, limit)
            except OSError as exc:
                # cgroup v1 refuses a limit below the usage (EBUSY): the usage grew meanwhile.
                if exc.errno != errno.EBUSY:
                    raise
                continue
            running.record.memory_limit_bytes = limit
            return
        raise OSError(errno.EBUSY, f"could not set a memory limit on {running.record.name}")

    def _signal(self, running: _Running, sig: signal.Signals, ending: Ending | None) -> None:
        now = time.monotonic()
        if ending is Ending.RUNNER_STOP:
            running.sent.add(Ending.RUNNER_STOP)
            running.record.stopped_at = running.record.stopped_at or now
        elif sig == signal.SIGTERM:
            running.sent.add(ProcessFault.SIGTERM)
            running.record.sigterm_at = running.record.sigterm_at or now
        else:
            running.sent.add(ProcessFault.SIGKILL)
        # The pidfd names this process even if it has exited and its pid was reused.
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(running.pidfd, sig)

    # --- the dispatcher --------------------------------------------------------------------
    def _supervise(self) -> None:
        with self._changed:
            while self._accepting:
                now = time.monotonic()
                for slot in range(self.parallelism):
                    if not self._slot_busy[slot] and now >= self._next_start[slot]:
                        try:
                            self._launch(slot)
                        except OSError:
                            log.exception("could not start an execution in slot %d", slot)
                            self._next_start[slot] = now + 1.0
                waits = [
                    self._next_start[s] - now
                    for s in range(self.parallelism)
                    if not self._slot_busy[s]
                ]
                self._changed.wait(max(0.0, min(waits, default=_IDLE_WAKEUP)))

    def _launch(self, slot: int) -> None:
        self._sequence += 1
        name = f"{self.name_prefix}-{self._sequence:05d}"
        box = self.memory.prepare(name)
        try:
            if self.memory_limit_bytes is not None:
                # Before the start, so the limit holds from the execution's first allocation.
                self.memory.set_limit(box, self.memory_limit_bytes)
            env = {**self._env, "CLOUD_RUN_EXECUTION": name}
            proc = subprocess.Popen(
                self.memory.command(box, self.command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError:
            self.memory.release(box)
            raise
        pidfd = os.pidfd_open(proc.pid)
        self.memory.attach(box, proc.pid)
        record = ExecutionRecord(
            name=name,
            slot=slot,
            pid=proc.pid,
            command=list(self.command),
            started_at=time.monotonic(),
            started_wall=time.time(),
            memory_mechanism=self.memory.mechanism,
            log_path=self.log_dir / f"{name}.log" if self.log_dir else None,
        )
        running = _Running(record=record, proc=proc, pidfd=pidfd, box=box)
        self._records.append(record)
        self._running[name] = running
        self._slot_busy[slot] = True
        record.memory_limit_bytes = self.memory_limit_bytes
        running.reader = threading.Thread(
            target=self._follow, args=(running,), name=f"execution-{name}", daemon=True
        )
        running.reader.start()
        self._changed.notify_all()
        log.info("started %s (pid %d) in slot %d", name, proc.pid, slot)

    def _follow(self, running: _Running) -> None:
        """Read the execution's output to its end, then reap it and close its record."""
        record = running.record
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        sink = open(record.log_path, "wb") if record.log_path else None  # noqa: SIM115
        try:
            for raw in running.proc.stdout:
                if sink is not None:
                    sink.write(raw)
                line = raw.decode(errors="replace").rstrip("\n")
                tail.append(line)
                with self._lock:
                    record.observe(line, time.monotonic())
        finally:
            if sink is not None:
                sink.close()
            running.proc.stdout.close()
            returncode = running.proc.wait()
            self._ended(running, returncode, list(tail))

    def _ended(self, running: _Running, returncode: int, tail: list[str]) -> None:
        now = time.monotonic()
        with self._changed:
            record = running.record
            oom_killed = self.memory.oom_killed(running.box)
            record.close(now, returncode, running.sent, oom_killed, self.exit_bound_seconds)
            record.tail = tail
            self.memory.release(running.box)
            os.close(running.pidfd)
            del self._running[record.name]
            self._slot_busy[record.slot] = False
            self._next_start[record.slot] = now + self._rng.uniform(*self.restart_delay)
            self._changed.notify_all()
        log.info(
            "%s ended: %s (exit %s)", record.name, record.ended_by, record.signal or returncode
        )


def _has_exited(running: _Running) -> bool:
    """Whether the process has exited, without reaping it (the reader thread reaps)."""
    if running.proc.returncode is not None:
        return True
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    try:
        return os.waitid(os.P_PIDFD, running.pidfd, flags) is not None
    except ChildProcessError:
        return True


def _execution_env(settings: Settings | None, extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of every execution: this process's, minus its settings, plus settings."""
    env = {k: v for k, v in os.environ.items() if k not in set(env_var_names())}
    if settings is not None:
        env.update(settings.as_environ())
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env
