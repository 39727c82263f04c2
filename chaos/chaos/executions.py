"""What one worker execution was, and what ended it: the records ExecutionRunner keeps.

Times are `time.monotonic()` of the campaign's process (`started_wall` is wall-clock for
logs). `exited_within_bound` answers the checker's "every execution exits": True or False
for executions that ended by themselves or after our SIGTERM, False for one the runner had
to stop after its bound had passed, None where it does not apply (we killed it first).
"""

from __future__ import annotations

import enum
import json
import signal
from dataclasses import dataclass, field
from pathlib import Path

from taskcore.events import Event

# Log events that mean the execution did work on a task (the last one starts the exit clock).
WORK_EVENTS = frozenset(
    {
        Event.TASK_SUCCEEDED,
        Event.TASK_RETRIED,
        Event.TASK_DEAD_LETTERED,
        Event.TASK_DUPLICATE,
        Event.TASK_CANCELLED,
        Event.TASK_RELEASED,
    }
)


class ProcessFault(enum.StrEnum):
    """A fault injected into a running worker execution."""

    SIGKILL = "sigkill"
    SIGTERM = "sigterm"
    MEMORY_LIMIT = "memory_limit"


class Ending(enum.StrEnum):
    """What ended an execution."""

    SELF = "self"  # it exited on its own (idle, budget, error)
    SIGKILL = "sigkill"
    SIGTERM = "sigterm"  # it exited after our SIGTERM
    MEMORY_LIMIT = "memory_limit"  # the OOM killer (or the RSS watchdog) killed it
    RUNNER_STOP = "runner_stop"  # the runner stopped it at the end


@dataclass
class ExecutionRecord:
    """One worker execution, as the checker needs it. Times are time.monotonic()."""

    name: str
    slot: int
    pid: int
    command: list[str]
    started_at: float
    started_wall: float
    memory_mechanism: str
    memory_limit_bytes: int | None = None
    faults: list[tuple[ProcessFault, float]] = field(default_factory=list)
    sigterm_at: float | None = None
    stopped_at: float | None = None
    last_work_at: float | None = None
    work_events: int = 0
    summary: dict | None = None
    ended_at: float | None = None
    returncode: int | None = None
    ended_by: Ending | None = None
    oom_killed: bool = False
    exited_within_bound: bool | None = None
    log_path: Path | None = None
    tail: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.ended_at is None

    @property
    def signal(self) -> str | None:
        """The signal that ended the process (SIGKILL, ...), or None if it exited with a code."""
        if self.returncode is None or self.returncode >= 0:
            return None
        return signal.Signals(-self.returncode).name

    @property
    def exited_by_itself(self) -> bool:
        return self.ended_by is Ending.SELF

    @property
    def exit_lag_seconds(self) -> float | None:
        """From its last work (or our SIGTERM, or its start) to its exit."""
        if self.ended_at is None:
            return None
        return self.ended_at - self._exit_clock_start()

    def observe(self, line: str, now: float) -> None:
        """Take in one line of the execution's output (the worker logs one JSON object a line)."""
        if not line.startswith("{"):
            return
        try:
            fields = json.loads(line)
        except ValueError:
            return
        event = fields.get("event") if isinstance(fields, dict) else None
        if event in WORK_EVENTS:
            self.last_work_at = now
            self.work_events += 1
        elif event == Event.EXECUTION_SUMMARY:
            self.summary = fields

    def close(
        self, now: float, returncode: int, sent: set, oom_killed: bool, exit_bound: float
    ) -> None:
        """The process has exited with returncode; sent holds what we did to it."""
        self.ended_at = now
        self.returncode = returncode
        self.oom_killed = oom_killed
        self.ended_by = ending_of(sent, returncode, oom_killed)
        if self.ended_by in (Ending.SELF, Ending.SIGTERM):
            self.exited_within_bound = self.exit_lag_seconds <= exit_bound
        elif self.ended_by is Ending.RUNNER_STOP:
            # Still running when the runner stopped it: overdue if its bound had passed by
            # then, undecided (None) if it was stopped before its bound was up.
            lag = self.stopped_at - self._exit_clock_start()
            self.exited_within_bound = False if lag > exit_bound else None

    def _exit_clock_start(self) -> float:
        # The last of: its start, its last work, our SIGTERM (the runner's stop excluded).
        return max(t for t in (self.started_at, self.last_work_at, self.sigterm_at) if t)


def ending_of(sent: set, returncode: int, oom_killed: bool) -> Ending:
    killed = returncode == -signal.SIGKILL
    if oom_killed and killed:
        return Ending.MEMORY_LIMIT
    if Ending.RUNNER_STOP in sent:
        return Ending.RUNNER_STOP
    if killed and ProcessFault.SIGKILL in sent:
        return Ending.SIGKILL
    if ProcessFault.SIGTERM in sent:
        return Ending.SIGTERM
    return Ending.SELF
