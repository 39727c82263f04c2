"""Sightings of one record: what may follow what, and the watcher that applies it."""

from __future__ import annotations

import random

import pytest

from chaos.records import REACHABLE, Observation, check_step
from chaos.violations import Rule
from chaos.watcher import RecordWatcher
from taskcore.status import OutputRef, StoredStatus, TaskState, TaskStatus
from tests.chaos.waiting import wait_until


def seen(generation, state, at=1.0, **fields) -> Observation:
    return Observation(
        at=at, generation=generation, state=state, revision=f"r{generation}", **fields
    )


def rules(before: Observation, after: Observation) -> list[Rule]:
    return [v.rule for v in check_step("t", before, after)]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (seen(1, TaskState.QUEUED), seen(5, TaskState.SUCCEEDED)),  # writes in between unseen
        (seen(1, TaskState.RUNNING), seen(2, TaskState.RETRYING, failures=1)),
        (seen(1, TaskState.SUCCEEDED), seen(1, TaskState.SUCCEEDED)),
        (
            seen(3, TaskState.DEAD_LETTERED, failures=5),
            seen(4, TaskState.RUNNING, replay_count=1, failures=0),  # a replay: a new life
        ),
        (Observation(0.5, None), seen(1, TaskState.RUNNING)),
    ],
)
def test_sightings_the_lifecycle_allows_pass(before, after):
    assert rules(before, after) == []


@pytest.mark.parametrize(
    ("before", "after", "rule", "why"),
    [
        (seen(5, TaskState.RUNNING), seen(4, TaskState.RUNNING), Rule.RECORD_REGRESSED, "back"),
        (seen(5, TaskState.RUNNING), Observation(2.0, None), Rule.RECORD_REGRESSED, "vanished"),
        (
            seen(5, TaskState.RUNNING),
            Observation(2.0, 5, TaskState.RETRYING, revision="other"),
            Rule.RECORD_REGRESSED,
            "two contents",
        ),
        (
            seen(5, TaskState.SUCCEEDED),
            seen(6, TaskState.SUCCEEDED),
            Rule.TRANSITION_NOT_ALLOWED,
            "rewritten",
        ),
        (
            seen(5, TaskState.DEAD_LETTERED, failures=1),
            seen(6, TaskState.RUNNING, failures=1),
            Rule.TRANSITION_NOT_ALLOWED,
            "unreplayed",
        ),
        (
            seen(5, TaskState.RETRYING, failures=3, attempts=3),
            seen(6, TaskState.RETRYING, failures=2, attempts=3),
            Rule.RECORD_REGRESSED,
            "failures went back",
        ),
        (
            seen(5, TaskState.RETRYING, attempts=3),
            seen(6, TaskState.RUNNING, attempts=2),
            Rule.RECORD_REGRESSED,
            "attempts went back",
        ),
        (
            seen(5, TaskState.RUNNING, replay_count=2),
            seen(6, TaskState.RUNNING, replay_count=1),
            Rule.RECORD_REGRESSED,
            "replay_count",
        ),
        (
            seen(5, TaskState.RUNNING),
            seen(6, TaskState.SCHEDULED),
            Rule.TRANSITION_NOT_ALLOWED,
            "cannot lead",
        ),
    ],
)
def test_sightings_that_break_the_lifecycle_are_reported_with_both_sightings(
    before, after, rule, why
):
    (violation,) = check_step("t", before, after)

    assert violation.rule == rule and why in violation.evidence
    assert f"generation {before.generation}" in violation.evidence


def test_a_terminal_state_leads_nowhere_even_over_several_writes():
    assert REACHABLE[TaskState.SUCCEEDED] == frozenset()
    assert TaskState.QUEUED in REACHABLE[TaskState.SCHEDULED]  # via queued → running → ...
    assert TaskState.RUNNING in REACHABLE[TaskState.SCHEDULED]


class ScriptedStore:
    """Answers read() with the next of a list of (record, generation), then the last one."""

    def __init__(self, script) -> None:
        self.script = list(script)

    def read(self, task_id):
        record, generation = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return None if record is None else StoredStatus(record, generation)


def record(state: TaskState, **fields) -> TaskStatus:
    return TaskStatus(task_id="t", task_type="chaos_quick", state=state, **fields)


def test_the_watcher_reports_a_record_that_moves_out_of_succeeded_and_keeps_first_outputs():
    outputs = [OutputRef(name="part-0.json", uri="gs://b/outputs/t/1-a/part-0.json", generation=9)]
    store = ScriptedStore(
        [
            (record(TaskState.RUNNING, revision="a"), 10),
            (record(TaskState.SUCCEEDED, revision="b", outputs=outputs), 11),
            (record(TaskState.RUNNING, revision="c"), 12),
        ]
    )
    watcher = RecordWatcher(store, lambda rng: "t", seed=1)

    for _ in range(3):
        watcher.observe("t")

    (violation,) = watcher.violations()
    assert violation.rule == Rule.TRANSITION_NOT_ALLOWED and "succeeded" in violation.evidence
    assert watcher.first_outputs() == {"t": {"part-0.json": 9}}
    assert watcher.last_sightings()["t"].generation == 12


def test_the_watcher_reads_random_tasks_in_the_background_until_stopped():
    store = ScriptedStore([(record(TaskState.QUEUED, revision="a"), 1)])
    picks = []

    def pick(rng: random.Random) -> str:
        picks.append(rng.random())
        return "t"

    with RecordWatcher(store, pick, seed=1, reads_per_second=200) as watcher:
        wait_until(lambda: watcher.reads >= 5, "five reads")

    assert not watcher.running and watcher.violations() == []
    assert len(picks) >= 5
