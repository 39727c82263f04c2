"""Running one execution's tasks as local processes, the way Cloud Run runs a job's containers.

At most `parallelism` tasks run at once; a task whose process exits non-zero runs again, up
to `max_retries` more times; past the task timeout it gets SIGTERM and, `term_grace` seconds
later, SIGKILL (Cloud Run's grace is 10 s), and that attempt failed. Cancelling stops pending
tasks from starting and running ones the same way. Each task runs in its own process group,
signalled as a whole, and whatever is left of the group when its main process exits is
killed, as a container's processes end with it. Everything a task prints goes to the
execution's log file, each line prefixed with the task index and attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.jobs.defaults import CLOUD_RUN_TERM_GRACE
from devstack.jobs.image import task_argv, task_env
from devstack.jobs.launch import spawn_task
from devstack.jobs.validation import RunSpec

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
# How long the end of an execution waits for a task's output to drain: a process that left
# the task's group (a daemon of its own) may hold the pipe open for ever.
_OUTPUT_DRAIN_SECONDS = 2.0


@dataclass
class Progress:
    """What an execution's tasks are doing, as the Execution resource reports it."""

    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    start_time: float | None = None
    completion_time: float | None = None
    cancelling: bool = False
    # The first task that failed for good, in Cloud Run's words.
    failure: str | None = None
    timed_out: bool = False

    @property
    def done(self) -> bool:
        return self.completion_time is not None


@dataclass
class ExecutionPlan:
    """One execution: its names, what its tasks run, and where their output goes."""

    job_id: str
    execution_id: str
    spec: RunSpec
    log_path: Path


class ExecutionLog:
    """The execution's log file: task output and the stand-in's notes, one line at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def line(self, prefix: str, data: bytes) -> None:
        if not data.endswith(b"\n"):
            data += b"\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(prefix.encode() + data)

    def note(self, prefix: str, text: str) -> None:
        """A line from the stand-in itself, the way Cloud Run logs container events."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self.line(prefix, f"[stand-in {stamp}Z] {text}".encode())

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Attempt:
    """One attempt at one task: its process and its deadlines (time.monotonic)."""

    index: int
    number: int
    proc: subprocess.Popen | None
    deadline: float
    spawn_error: str | None = None
    stop_reason: str | None = None  # "timeout" or "cancel" once it was told to stop
    kill_at: float | None = None
    killed: bool = False

    @property
    def prefix(self) -> str:
        return f"[task {self.index} attempt {self.number}] "

    def next_deadline(self) -> float | None:
        if self.stop_reason is None:
            return self.deadline
        return None if self.killed else self.kill_at


class ExecutionRunner:
    """Runs an execution's tasks in a thread of its own, reporting Progress as they change."""

    def __init__(
        self,
        plan: ExecutionPlan,
        on_progress: Callable[[Progress], None],
        *,
        term_grace: float = CLOUD_RUN_TERM_GRACE,
    ) -> None:
        self.plan = plan
        self._on_progress = on_progress
        self._term_grace = term_grace
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._progress = Progress()
        # Opened here, so that a work directory it cannot write fails RunJob, not the thread.
        self._log = ExecutionLog(plan.log_path)
        self._output_threads: list[threading.Thread] = []
        self._thread = threading.Thread(
            target=self._run, name=f"execution-{plan.execution_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Start no more tasks; stop running ones (SIGTERM, then SIGKILL after the grace)."""
        self._cancel.set()
        self._events.put(None)

    def is_alive(self) -> bool:
        """Whether any of its task processes may still run."""
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every task process to be gone; whether they are."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # The rest runs in the runner's thread: it alone spawns, so Linux's parent-death signal
    # (tied to the thread that spawned) fires only once the runner is gone.

    def _run(self) -> None:
        spec = self.plan.spec
        self._pending: deque[int] = deque(range(spec.task_count))
        self._attempts = [0] * spec.task_count
        self._retried: set[int] = set()
        self._running: dict[int, Attempt] = {}
        self._cancel_seen = False
        try:
            self._loop()
        except BaseException:
            log.exception("execution %s: supervision failed", self.plan.execution_id)
            self._progress.failure = self._progress.failure or "The stand-in failed (see its log)."
            raise
        finally:
            self._kill_all()
            self._progress.running = 0
            self._progress.cancelled += len(self._pending)
            self._pending.clear()
            self._progress.completion_time = time.time()
            self._report()
            self._log.close()

    def _loop(self) -> None:
        while True:
            if self._cancel.is_set() and not self._cancel_seen:
                self._begin_cancel()
            while (
                not self._cancel_seen
                and self._pending
                and len(self._running) < self.plan.spec.parallelism
            ):
                self._start(self._pending.popleft())
            if not self._running and not self._pending:
                return
            self._wait_for_event()
            self._enforce_deadlines()

    def _report(self) -> None:
        progress = self._progress
        progress.running = len(self._running)
        progress.retried = len(self._retried)
        self._on_progress(Progress(**vars(progress)))

    def _start(self, index: int) -> None:
        spec = self.plan.spec
        number = self._attempts[index]
        self._attempts[index] += 1
        cloud_run = {
            "CLOUD_RUN_JOB": self.plan.job_id,
            "CLOUD_RUN_EXECUTION": self.plan.execution_id,
            "CLOUD_RUN_TASK_INDEX": str(index),
            "CLOUD_RUN_TASK_ATTEMPT": str(number),
            "CLOUD_RUN_TASK_COUNT": str(spec.task_count),
        }
        argv = task_argv(spec.container.command, spec.container.args)
        if self._progress.start_time is None:
            self._progress.start_time = time.time()
        attempt = Attempt(index, number, None, deadline=time.monotonic() + spec.timeout_seconds)
        try:
            attempt.proc = spawn_task(argv, task_env(spec.env, cloud_run))
        except OSError as exc:
            attempt.spawn_error = f"The container could not start: {exc}"
        self._running[index] = attempt
        if attempt.proc is None:
            self._log.note(attempt.prefix, attempt.spawn_error)
            self._events.put(attempt)
        else:
            self._log.note(attempt.prefix, f"started pid {attempt.proc.pid}: {shlex.join(argv)}")
            output = threading.Thread(target=self._copy_output, args=(attempt,), daemon=True)
            output.start()
            self._output_threads.append(output)
            threading.Thread(target=self._await_exit, args=(attempt,), daemon=True).start()
        self._report()

    def _copy_output(self, attempt: Attempt) -> None:
        stream = attempt.proc.stdout
        try:
            for line in iter(lambda: stream.readline(_READ_CHUNK), b""):
                self._log.line(attempt.prefix, line)
        finally:
            stream.close()

    def _await_exit(self, attempt: Attempt) -> None:
        attempt.proc.wait()
        self._events.put(attempt)

    def _wait_for_event(self) -> None:
        deadlines = [d for a in self._running.values() if (d := a.next_deadline()) is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(event, Attempt):
                self._finish(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _finish(self, attempt: Attempt) -> None:
        """An attempt's main process ended: end its group and decide the task's fate."""
        del self._running[attempt.index]
        if attempt.proc is not None:
            _signal_group(attempt.proc.pid, signal.SIGKILL)
            code = attempt.proc.returncode
            self._log.note(attempt.prefix, f"container ended: {_describe_exit(code)}")
        else:
            code = None
        progress = self._progress
        if attempt.stop_reason == "cancel":
            progress.cancelled += 1
        elif attempt.stop_reason is None and code == 0:
            progress.succeeded += 1
        elif self._attempts[attempt.index] <= self.plan.spec.max_retries and not self._cancel_seen:
            self._retried.add(attempt.index)
            self._pending.appendleft(attempt.index)
            self._log.note(attempt.prefix, "task failed; retrying")
        else:
            progress.failed += 1
            if progress.failure is None:
                progress.failure = self._failure_message(attempt, code)
                progress.timed_out = attempt.stop_reason == "timeout"
        self._report()

    def _failure_message(self, attempt: Attempt, code: int | None) -> str:
        task = f"Task {self.plan.execution_id}-task{attempt.index}"
        if attempt.spawn_error:
            return f"{task} failed with message: {attempt.spawn_error}"
        if attempt.stop_reason == "timeout":
            return f"{task} failed with message: The configured timeout was reached."
        return (
            f"{task} failed with message: The container exited with an error "
            f"({_describe_exit(code)})."
        )

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for attempt in list(self._running.values()):
            if attempt.proc is None:
                continue
            if attempt.stop_reason is None and now >= attempt.deadline:
                seconds = self.plan.spec.timeout_seconds
                self._terminate(attempt, "timeout", f"task timeout ({seconds:g}s) reached")
            elif attempt.kill_at is not None and not attempt.killed and now >= attempt.kill_at:
                attempt.killed = True
                self._log.note(
                    attempt.prefix, f"still running {self._term_grace:g}s after SIGTERM: SIGKILL"
                )
                _signal_group(attempt.proc.pid, signal.SIGKILL)

    def _terminate(self, attempt: Attempt, reason: str, why: str) -> None:
        attempt.stop_reason = reason
        attempt.kill_at = time.monotonic() + self._term_grace
        self._log.note(attempt.prefix, f"{why}: SIGTERM")
        _signal_group(attempt.proc.pid, signal.SIGTERM)

    def _begin_cancel(self) -> None:
        self._cancel_seen = True
        self._progress.cancelling = True
        self._progress.cancelled += len(self._pending)
        self._pending.clear()
        for attempt in self._running.values():
            if attempt.proc is not None and attempt.stop_reason != "cancel":
                if attempt.stop_reason is None:
                    self._terminate(attempt, "cancel", "execution cancelled")
                else:  # already stopping for its timeout: it ends as cancelled, same deadline
                    attempt.stop_reason = "cancel"
        self._report()

    def _kill_all(self) -> None:
        """The last word: no process of this execution outlives its runner."""
        for attempt in list(self._running.values()):
            if attempt.proc is not None and attempt.proc.poll() is None:
                _signal_group(attempt.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    attempt.proc.wait(timeout=5)
            self._running.pop(attempt.index, None)
            self._progress.cancelled += 1
        drained_by = time.monotonic() + _OUTPUT_DRAIN_SECONDS
        for output in self._output_threads:
            output.join(max(0.0, drained_by - time.monotonic()))
