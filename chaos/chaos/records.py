"""Status records as the campaign sees them, and the rules any two sightings must keep.

An `Observation` is one read of a task's record: its generation and what the lifecycle
rules need of it. `check_step(before, after)` judges a later sighting against an earlier
one: generations never go back, one generation never holds two contents, counters never
shrink within a life, a state never moves where `taskcore.status.ALLOWED` (and what it
implies over several writes) does not lead, a terminal record is never rewritten, and a
dead-lettered task runs again only as a replay. `check_history` judges a record's own
`history` the same way, entry by entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.violations import Rule, Violation
from taskcore.status import ALLOWED, TERMINAL, StoredStatus, TaskState, TaskStatus


def _reachable() -> dict[TaskState | None, frozenset[TaskState]]:
    """Where each state can lead over one or more writes (the closure of ALLOWED)."""
    closure = {}
    for start in ALLOWED:
        seen: set[TaskState] = set()
        frontier = list(ALLOWED[start])
        while frontier:
            state = frontier.pop()
            if state not in seen:
                seen.add(state)
                frontier.extend(ALLOWED[state])
        closure[start] = frozenset(seen)
    return closure


REACHABLE = _reachable()


@dataclass(frozen=True)
class Observation:
    """One read of a task's record, seconds after the campaign started (None: no record)."""

    at: float
    generation: int | None
    state: TaskState | None = None
    revision: str = ""
    replay_count: int = 0
    attempts: int = 0
    failures: int = 0
    poison: bool = False
    outputs: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def of(cls, stored: StoredStatus | None, at: float) -> Observation:
        if stored is None:
            return cls(at=at, generation=None)
        record = stored.record
        return cls(
            at=at,
            generation=stored.generation,
            state=record.state,
            revision=record.revision,
            replay_count=record.replay_count,
            attempts=record.attempts,
            failures=record.failures,
            poison=bool(record.dead_letter and record.dead_letter.poison),
            outputs=tuple((ref.name, ref.generation) for ref in record.outputs),
        )

    def describe(self) -> str:
        if self.generation is None:
            return f"no record at {self.at:.2f}s"
        return (
            f"generation {self.generation} {self.state} (replay_count {self.replay_count}, "
            f"attempts {self.attempts}, failures {self.failures}) at {self.at:.2f}s"
        )


def check_step(task_id: str, before: Observation, after: Observation) -> list[Violation]:
    """What is wrong with seeing `after` some time after `before` (nothing: [])."""
    if before.generation is None:
        return []

    def broken(rule: Rule, what: str) -> list[Violation]:
        evidence = f"{what}: saw {before.describe()}, then {after.describe()}"
        return [Violation(rule, task_id, evidence)]

    if after.generation is None:
        return broken(Rule.RECORD_REGRESSED, "the record vanished")
    if after.generation < before.generation:
        return broken(Rule.RECORD_REGRESSED, "the generation went back")
    if after.generation == before.generation:
        if after.revision != before.revision:
            return broken(Rule.RECORD_REGRESSED, "one generation held two contents")
        return []
    if before.state in TERMINAL:
        return broken(Rule.TRANSITION_NOT_ALLOWED, f"a {before.state} record was rewritten")
    if after.state not in REACHABLE[before.state]:
        return broken(Rule.TRANSITION_NOT_ALLOWED, f"{before.state} cannot lead to {after.state}")
    if after.replay_count < before.replay_count:
        return broken(Rule.RECORD_REGRESSED, "replay_count went back")
    if after.attempts < before.attempts:
        return broken(Rule.RECORD_REGRESSED, "attempts went back")
    same_life = after.replay_count == before.replay_count and not before.poison
    if same_life and after.failures < before.failures:
        return broken(Rule.RECORD_REGRESSED, "failures went back within one life")
    if (
        before.state == TaskState.DEAD_LETTERED
        and after.state != TaskState.DEAD_LETTERED
        and same_life
    ):
        return broken(Rule.TRANSITION_NOT_ALLOWED, "a dead-lettered task ran again unreplayed")
    return []


def check_history(task_id: str, record: TaskStatus) -> list[Violation]:
    """Whether the record's history is a path the lifecycle allows, ending where it is now."""
    history = record.history
    if not history:
        return [Violation(Rule.HISTORY_INVALID, task_id, f"a {record.state} record has no history")]
    found = []
    for earlier, later in zip(history, history[1:], strict=False):
        if later.state not in ALLOWED[earlier.state]:
            found.append(
                Violation(
                    Rule.HISTORY_INVALID,
                    task_id,
                    f"history goes from {earlier.state} ({earlier.at.isoformat()}) to "
                    f"{later.state} ({later.at.isoformat()})",
                )
            )
    if history[-1].state != record.state:
        found.append(
            Violation(
                Rule.HISTORY_INVALID,
                task_id,
                f"history ends in {history[-1].state} but the record says {record.state}",
            )
        )
    return found
