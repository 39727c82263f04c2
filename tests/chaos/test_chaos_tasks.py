"""The campaign's task types end exactly as `expected_end` says, and say which run wrote them;
the workload drawn from a seed is valid, repeatable, and leaves the memory hog out."""

from __future__ import annotations

from collections import Counter

import pytest

from chaos import tasks as chaos_tasks
from chaos.stack import TASK_MODULES
from chaos.tasks import (
    CPU_TIME_LIMIT,
    HEALING_SETS,
    SUCCEEDED,
    expected_end,
    payload_hash,
)
from chaos.workload import draw_tasks, mix_with
from taskcore.tasks import load_task_modules
from taskcore.testing import run_task

MAX_FAILURES = 5
HANDLERS = {
    name: getattr(chaos_tasks, name)
    for name in chaos_tasks.CHAOS_TYPES
    if name != "chaos_memory_hog"
}


def run_as_worker(task_type: str, fields: dict, attempt: int = 1):
    # The CPU type's real limit is 8 s; a short one keeps an overrun quick to show.
    limit = 0.3 if task_type == "chaos_cpu" and fields["seconds"] >= CPU_TIME_LIMIT else None
    return run_task(HANDLERS[task_type], fields, attempt=attempt, time_limit=limit)


def ended_as(run, expected) -> bool:
    if expected.end == SUCCEEDED:
        return run.succeeded
    permanent = expected.failures == 1
    return (
        not run.succeeded
        and run.failure.error_type == expected.error_type
        and run.failure.permanent == permanent
    )


@pytest.mark.parametrize(
    ("task_type", "fields"),
    [
        ("chaos_quick", {"parts": 3}),
        ("chaos_sleepy", {"seconds": 15.0, "parts": 2}),
        ("chaos_flaky", {"fail_first": 0}),
        ("chaos_always_transient", {}),
        ("chaos_permanent", {}),
        ("chaos_data_error", {"exponent": 309}),
        ("chaos_data_error", {"exponent": 308}),
        ("chaos_cpu", {"seconds": 0.05}),
        ("chaos_cpu", {"seconds": CPU_TIME_LIMIT + 1}),
    ],
)
def test_each_chaos_type_ends_as_its_expectation_says(task_type, fields):
    fields = {"tag": "t-1", **fields}
    expected = expected_end(task_type, fields, MAX_FAILURES)

    run = run_as_worker(task_type, fields)

    assert ended_as(run, expected), (expected, run.failure)


def test_a_flaky_task_fails_transiently_on_its_first_k_attempts_then_succeeds():
    fields = {"tag": "t-2", "fail_first": 3, "seconds": 1.5}

    attempts = [run_as_worker("chaos_flaky", fields, attempt) for attempt in (1, 2, 3, 4)]

    assert [run.failure.error_type if run.failure else None for run in attempts] == [
        "chaos_flaky",
        "chaos_flaky",
        "chaos_flaky",
        None,
    ]
    assert not any(run.failure.permanent for run in attempts[:3])
    assert expected_end("chaos_flaky", fields, MAX_FAILURES).end == SUCCEEDED


def test_every_part_names_the_run_that_wrote_it_and_the_payload_it_ran_with():
    fields = {"tag": "t-3", "parts": 3}

    run = run_task(chaos_tasks.chaos_quick, fields, attempt=2, task_id="task-3")

    assert sorted(run.outputs) == ["part-0.json", "part-1.json", "part-2.json"]
    parts = [run.json(f"part-{i}.json") for i in range(3)]
    assert {p["run_id"] for p in parts} == {"2-test"}
    assert {p["payload_hash"] for p in parts} == {
        payload_hash(chaos_tasks.parse_chaos_payload("chaos_quick", fields))
    }
    assert [p["part"] for p in parts] == [0, 1, 2]


def test_a_sleepy_task_sleeps_its_seconds_between_its_parts():
    run = run_task(chaos_tasks.chaos_sleepy, {"tag": "t-4", "seconds": 12.0, "parts": 4})

    assert run.succeeded and len(run.outputs) == 4
    assert run.slept_seconds == pytest.approx(12.0)
    assert [p.fraction for p in run.progress] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("task_type", sorted(HEALING_SETS))
def test_a_replay_with_the_healing_set_turns_a_failing_task_into_one_that_succeeds(task_type):
    failing = {"tag": "t-5", "exponent": 999, "seconds": CPU_TIME_LIMIT + 2}
    fields = {
        k: v for k, v in failing.items() if k in chaos_tasks.CHAOS_TYPES[task_type].model_fields
    }
    healed = {**fields, **dict(HEALING_SETS[task_type])}

    assert expected_end(task_type, fields, MAX_FAILURES).end != SUCCEEDED
    assert expected_end(task_type, healed, MAX_FAILURES).end == SUCCEEDED
    assert run_as_worker(task_type, healed).succeeded


def test_the_memory_hog_is_expected_in_the_dlq_as_resource_exhausted():
    expected = expected_end("chaos_memory_hog", {"tag": "t-6", "megabytes": 2048}, MAX_FAILURES)

    assert (expected.end, expected.error_type) == ("dead_lettered", "resource_exhausted")


def test_the_same_seed_draws_the_same_tasks_and_another_seed_others():
    assert draw_tasks(7, 50) == draw_tasks(7, 50)
    assert draw_tasks(7, 50) != draw_tasks(8, 50)
    assert draw_tasks(7, 80)[:50] == draw_tasks(7, 50)


def test_every_drawn_task_is_one_the_api_accepts():
    registry = load_task_modules(TASK_MODULES)

    for spec in draw_tasks(3, 500, mix_with(memory_hog_weight=1)):
        registry.validate_payload(spec.task_type, spec.fields)


def test_the_memory_hog_is_left_out_of_the_mix_until_its_weight_is_set():
    default = Counter(spec.task_type for spec in draw_tasks(5, 2000))
    with_hog = Counter(
        spec.task_type for spec in draw_tasks(5, 2000, mix_with(memory_hog_weight=5))
    )

    assert "chaos_memory_hog" not in default
    assert with_hog["chaos_memory_hog"] > 0
    assert set(default) == set(mix_with()) - {"chaos_memory_hog"}
