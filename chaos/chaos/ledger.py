"""What the campaign did and therefore expects: every submission, every task it must see end,
and every operator action. The submitter, the operator, the drain and the checker share it.

A task is *tracked* once the API accepted it (202) or once an operator's `--set` replay made
it a replacement of a tracked task. Submissions the API refused (503) or never answered
(timeout) are kept too: such a task may still have been published, and if it ran, the
checker finds it by its tag and holds it to the same rules.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.tasks import Expected, expected_end
from chaos.workload import TaskSpec

ACCEPTED = "accepted"
REPLACEMENT = "replacement"


@dataclass
class Submission:
    """One POST /submit-task: what was sent and what came back (seconds after the start)."""

    spec: TaskSpec
    at: float
    outcome: str  # accepted | refused | timeout | error
    status: int | None = None
    task_id: str | None = None
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Tracked:
    """A task the campaign must see end, and how it must end."""

    task_id: str
    task_type: str
    fields: dict[str, Any]
    expected: Expected
    origin: str = ACCEPTED
    tag: str | None = None
    replay_of: str | None = None
    # A plain replay published a message with this replay_count: the task's record must
    # reach it before the task counts as ended.
    min_replay_count: int = 0
    accepted_at: float = 0.0


@dataclass
class OperatorRecord:
    """One operator action as it went: what, when, on which task, and what came of it."""

    action: str
    at: float
    task_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)


class Ledger:
    """Thread-safe record of the campaign's submissions, tracked tasks and operator actions."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures
        self._lock = threading.Lock()
        self._submissions: list[Submission] = []
        self._tracked: dict[str, Tracked] = {}
        self._operator: list[OperatorRecord] = []

    # --- submissions ---------------------------------------------------------------------
    def submitted(self, submission: Submission) -> Tracked | None:
        """Record a submission; an accepted one becomes a tracked task (returned)."""
        spec = submission.spec
        tracked = None
        if submission.outcome == ACCEPTED:
            tracked = Tracked(
                task_id=submission.task_id,
                task_type=spec.task_type,
                fields=dict(spec.fields),
                expected=expected_end(spec.task_type, spec.fields, self.max_failures),
                tag=spec.tag,
                accepted_at=submission.at + submission.seconds,
            )
        with self._lock:
            self._submissions.append(submission)
            if tracked is not None:
                self._tracked[tracked.task_id] = tracked
        return tracked

    def submissions(self) -> list[Submission]:
        with self._lock:
            return sorted(self._submissions, key=lambda s: s.spec.index)

    def unaccepted(self) -> dict[str, TaskSpec]:
        """Specs of submissions that were not accepted, by tag."""
        with self._lock:
            return {s.spec.tag: s.spec for s in self._submissions if s.outcome != ACCEPTED}

    def submission_outcomes(self) -> Counter:
        with self._lock:
            return Counter(s.outcome for s in self._submissions)

    # --- tracked tasks -------------------------------------------------------------------
    def tracked(self) -> dict[str, Tracked]:
        """A snapshot of every tracked task, by task id."""
        with self._lock:
            return dict(self._tracked)

    def accepted_ids(self) -> list[str]:
        """Accepted task ids in the order they were accepted."""
        with self._lock:
            return [t.task_id for t in self._tracked.values() if t.origin == ACCEPTED]

    def get(self, task_id: str) -> Tracked | None:
        with self._lock:
            return self._tracked.get(task_id)

    def expect_life(self, task_id: str, replay_count: int) -> None:
        """task_id's record must reach this replay_count (a plain replay publishes it)."""
        with self._lock:
            self._tracked[task_id].min_replay_count = replay_count

    def replaced(self, original: str, new_task_id: str, fields: dict[str, Any], at: float) -> None:
        """A --set replay of original runs as new_task_id with these fields."""
        with self._lock:
            source = self._tracked[original]
            self._tracked[new_task_id] = Tracked(
                task_id=new_task_id,
                task_type=source.task_type,
                fields=dict(fields),
                expected=expected_end(source.task_type, fields, self.max_failures),
                origin=REPLACEMENT,
                tag=source.tag,
                replay_of=original,
                accepted_at=at,
            )

    # --- operator actions ----------------------------------------------------------------
    def operated(self, record: OperatorRecord) -> None:
        with self._lock:
            self._operator.append(record)

    def operator_records(self) -> list[OperatorRecord]:
        with self._lock:
            return list(self._operator)
