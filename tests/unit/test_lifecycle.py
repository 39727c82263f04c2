"""The rules of a task's life, judged against the record as read (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskcore import lifecycle
from taskcore.errors import InvalidTransitionError
from taskcore.lifecycle import Delivery, Verdict
from taskcore.status import (
    DeadLetterInfo,
    ErrorInfo,
    OutputRef,
    Refusal,
    TaskState,
    TaskStatus,
    check_transition,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DELIVERY = Delivery(task_id="t1", task_type="data_transformation", message_id="m1")
REPLAY = Delivery(task_id="t1", task_type="data_transformation", message_id="m2", replay_count=1)
OUT = [OutputRef(name="results.json", uri="gs://b/outputs/t1/1-aa/results.json", generation=7)]
ERROR = ErrorInfo(type="RuntimeError", message="boom", at=NOW, attempt=1)


def apply(change, record):
    """What StatusStore.transition would write (or the Refusal / None), checking the move."""
    decided = change(record.model_copy(deep=True) if record else None)
    if isinstance(decided, TaskStatus):
        check_transition(record.state if record else None, decided.state)
    return decided


def claimed(run_id="1-aa", lease_seconds=60, now=NOW, record=None):
    return apply(lifecycle.claim(DELIVERY, run_id, "exec-a", now, lease_seconds), record)


def test_a_first_claim_creates_a_running_record_held_by_the_run():
    record = claimed()

    assert record.state == TaskState.RUNNING and record.attempts == 1
    assert record.run.id == "1-aa" and record.run.lease_until == NOW + timedelta(seconds=60)
    assert lifecycle.assess(record, DELIVERY, NOW) == Verdict.WAIT


def test_a_live_claim_refuses_every_other_run():
    record = claimed()
    other = lifecycle.claim(DELIVERY, "2-bb", "exec-b", NOW, 60)

    assert apply(other, record).reason == "held"
    success = lifecycle.succeed(DELIVERY, "2-bb", "exec-b", 2, OUT, NOW)
    assert apply(success, record).reason == "held"
    failure = lifecycle.fail(
        DELIVERY, "2-bb", "exec-b", 2, ERROR, NOW, permanent=True, max_failures=5
    )
    assert apply(failure, record).reason == "held"


def test_an_expired_claim_is_taken_over_and_counted_as_an_interruption():
    record = claimed(lease_seconds=60)
    later = NOW + timedelta(seconds=61)

    assert lifecycle.assess(record, DELIVERY, later) == Verdict.TAKE_OVER
    taken = apply(lifecycle.claim(DELIVERY, "2-bb", "exec-b", later, 60, isolated=True), record)
    assert taken.run.id == "2-bb" and taken.run.isolated
    assert taken.attempts == 2 and taken.interruptions == 1


def test_succeeded_is_terminal_for_every_later_write():
    done = apply(lifecycle.succeed(DELIVERY, "1-aa", "exec-a", 1, OUT, NOW), claimed())
    assert done.state == TaskState.SUCCEEDED and done.run is None and done.outputs == OUT

    late_failure = lifecycle.fail(
        DELIVERY, "1-aa", "exec-a", 1, ERROR, NOW, permanent=False, max_failures=5
    )
    late_claim = lifecycle.claim(DELIVERY, "1-aa", "exec-a", NOW, 60)
    late_renewal = lifecycle.renew("1-aa", NOW, 60)
    for change in (late_failure, late_claim):
        assert apply(change, done).reason == "finished"
    assert apply(late_renewal, done).reason == "lost"
    assert lifecycle.assess(done, REPLAY, NOW) == Verdict.DUPLICATE, "even a replay"
    with pytest.raises(InvalidTransitionError):
        check_transition(TaskState.SUCCEEDED, TaskState.RUNNING)


def test_a_run_that_lost_its_claim_cannot_record_its_result():
    record = claimed()
    taken = apply(
        lifecycle.claim(DELIVERY, "2-bb", "exec-b", NOW + timedelta(seconds=61), 60), record
    )

    assert apply(lifecycle.renew("1-aa", NOW, 60), taken).reason == "lost"
    stale = lifecycle.succeed(DELIVERY, "1-aa", "exec-a", 1, OUT, NOW + timedelta(seconds=62))
    assert apply(stale, taken).reason == "held"


def test_failures_count_toward_the_limit_and_the_last_one_dead_letters_pending_the_publish():
    record = claimed(run_id="1-x")
    for attempt in range(1, 5):
        record = apply(
            lifecycle.fail(
                DELIVERY, f"{attempt}-x", "e", attempt, ERROR, NOW, permanent=False, max_failures=5
            ),
            record,
        )
        assert record.state == TaskState.RETRYING and record.failures == attempt
    last = apply(
        lifecycle.fail(DELIVERY, "5-x", "e", 5, ERROR, NOW, permanent=False, max_failures=5),
        record,
    )

    assert last.state == TaskState.DEAD_LETTERED and last.failures == 5
    assert last.dead_letter == DeadLetterInfo(error_type="RuntimeError", pending=True)
    assert len(last.errors) == 5 and last.last_error == ERROR
    confirmed = apply(lifecycle.dead_letter_published("dlq-1"), last)
    assert not confirmed.dead_letter.pending and confirmed.dead_letter.message_id == "dlq-1"


def test_a_permanent_failure_dead_letters_at_once():
    record = apply(
        lifecycle.fail(DELIVERY, "1-aa", "e", 1, ERROR, NOW, permanent=True, max_failures=5),
        claimed(),
    )
    assert record.state == TaskState.DEAD_LETTERED and record.failures == 1


def test_a_dead_lettered_task_runs_again_only_as_a_replay():
    dead = apply(
        lifecycle.fail(DELIVERY, "1-aa", "e", 1, ERROR, NOW, permanent=True, max_failures=5),
        claimed(),
    )

    assert lifecycle.assess(dead, DELIVERY, NOW) == Verdict.DEAD, "a duplicate of its message"
    assert apply(lifecycle.claim(DELIVERY, "2-bb", "e", NOW, 60), dead).reason == "dead_lettered"
    assert lifecycle.assess(dead, REPLAY, NOW) == Verdict.RUN
    replayed = apply(lifecycle.claim(REPLAY, "2-bb", "e", NOW, 60), dead)
    assert replayed.state == TaskState.RUNNING and replayed.replay_count == 1
    assert replayed.failures == 0, "a replay starts with a fresh retry budget"
    assert replayed.errors == dead.errors, "its history stays"


def test_a_result_from_an_older_life_never_lands():
    replayed = apply(lifecycle.claim(REPLAY, "2-bb", "e", NOW, 60), None)
    old = lifecycle.succeed(DELIVERY, "1-aa", "e", 1, OUT, NOW)

    assert apply(old, replayed).reason == "older_life"


def test_success_after_failures_keeps_the_errors_in_history_but_not_as_current():
    record = apply(
        lifecycle.fail(DELIVERY, "1-aa", "e", 1, ERROR, NOW, permanent=False, max_failures=5),
        claimed(),
    )
    done = apply(lifecycle.succeed(DELIVERY, "2-bb", "e", 2, OUT, NOW), record)

    assert done.last_error is None and done.errors == [ERROR]
    assert [h.state for h in done.history] == [
        TaskState.RUNNING,
        TaskState.RETRYING,
        TaskState.SUCCEEDED,
    ]


def test_a_poison_record_with_the_task_id_gives_way_to_the_real_task():
    poison = TaskStatus(
        task_id="t1",
        task_type="unknown",
        state=TaskState.DEAD_LETTERED,
        dead_letter=DeadLetterInfo(error_type="invalid_json", poison=True),
    )
    assert lifecycle.assess(poison, DELIVERY, NOW) == Verdict.RUN
    assert apply(lifecycle.succeed(DELIVERY, "1-aa", "e", 1, OUT, NOW), poison).state == "succeeded"


def test_release_gives_the_task_back_without_counting():
    record = apply(lifecycle.release("1-aa", NOW), claimed())
    assert record.state == TaskState.QUEUED and record.run is None and record.failures == 0
    assert apply(lifecycle.release("1-aa", NOW), record) is None, "nothing left to release"


def test_pubsub_exhaustion_reconciles_a_record_stuck_running_but_not_an_ended_one():
    stuck = claimed()
    reconciled = apply(lifecycle.exhausted_by_pubsub(NOW, 5), stuck)

    assert reconciled.state == TaskState.DEAD_LETTERED and reconciled.run is None
    assert reconciled.dead_letter.by == "pubsub"
    assert reconciled.last_error.type == "delivery_attempts_exhausted"
    done = apply(lifecycle.succeed(DELIVERY, "1-aa", "e", 1, OUT, NOW), stuck)
    assert apply(lifecycle.exhausted_by_pubsub(NOW, 5), done) is None


def test_refusals_carry_the_record_they_were_judged_on():
    record = claimed()
    refusal = apply(lifecycle.claim(DELIVERY, "2-bb", "e", NOW, 60), record)
    assert isinstance(refusal, Refusal) and refusal.record.run.id == "1-aa"
