"""The checker can fail: evidence of a clean campaign passes, and each doctored piece of
evidence is reported under its rule, naming the task and what was wrong."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from chaos.checker import check
from chaos.evidence import DeadLetterView, Evidence, ExecutionView, OutputObject
from chaos.ledger import REPLACEMENT, Tracked
from chaos.records import Observation
from chaos.tasks import expected_end, parse_chaos_payload, part_name, payload_hash
from chaos.violations import Rule
from chaos.workload import TaskSpec
from taskcore.outputs import crc32c_of
from taskcore.status import (
    DeadLetterInfo,
    ErrorInfo,
    HistoryEntry,
    OutputRef,
    StoredStatus,
    TaskState,
    TaskStatus,
)

BUCKET = "chaos-bucket"
MAX_FAILURES = 5
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def history(*states: TaskState) -> list[HistoryEntry]:
    return [HistoryEntry(state=s, at=T0 + timedelta(seconds=i)) for i, s in enumerate(states)]


class Campaign:
    """Evidence of a small campaign that kept every promise, to doctor one piece at a time."""

    def __init__(self) -> None:
        self.evidence = Evidence(
            bucket_name=BUCKET, max_failures=MAX_FAILURES, exit_bound_seconds=90
        )
        self.generation = 1000

    def next_generation(self) -> int:
        self.generation += 1
        return self.generation

    def track(self, task_id: str, task_type: str, fields: dict, **extra) -> Tracked:
        tracked = Tracked(
            task_id, task_type, fields, expected_end(task_type, fields, MAX_FAILURES), **extra
        )
        self.evidence.tracked[task_id] = tracked
        return tracked

    def part(self, task_id: str, fields: dict, run_id: str, index: int, task_type="chaos_quick"):
        """One output of run_id, stored, and the OutputRef a record names it by."""
        payload = parse_chaos_payload(task_type, fields)
        content = {
            "task_id": task_id,
            "task_type": task_type,
            "tag": payload.tag,
            "run_id": run_id,
            "part": index,
            "parts": payload.parts,
            "payload_hash": payload_hash(payload),
            "payload": payload.model_dump(mode="json"),
        }
        data = json.dumps(content).encode()
        name = part_name(index)
        uri = f"gs://{BUCKET}/outputs/{task_id}/{run_id}/{name}"
        generation = self.next_generation()
        self.evidence.outputs[(uri, generation)] = OutputObject(
            uri, generation, "yes", data, crc32c_of(data)
        )
        return OutputRef(name=name, uri=uri, generation=generation, crc32c=crc32c_of(data))

    def succeeded(self, task_id: str, parts: int = 2, run_id: str = "2-aaaaaa") -> TaskStatus:
        fields = {"tag": f"tag-{task_id}", "parts": parts}
        self.track(task_id, "chaos_quick", fields)
        outputs = [self.part(task_id, fields, run_id, i) for i in range(parts)]
        return self.store(
            TaskStatus(
                task_id=task_id,
                task_type="chaos_quick",
                state=TaskState.SUCCEEDED,
                attempts=2,
                history=history(TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED),
                outputs=outputs,
            )
        )

    def dead_lettered(self, task_id: str, task_type="chaos_permanent", **fields) -> TaskStatus:
        fields = {"tag": f"tag-{task_id}", **fields}
        tracked = self.track(task_id, task_type, fields)
        # A task meant to succeed is dead-lettered here as if it had failed transiently.
        error_type = tracked.expected.error_type or "chaos_flaky"
        failures = tracked.expected.failures or MAX_FAILURES
        error = ErrorInfo(type=error_type, message="its own failure", attempt=1)
        self.letter(task_id, error_type)
        return self.store(
            TaskStatus(
                task_id=task_id,
                task_type=task_type,
                state=TaskState.DEAD_LETTERED,
                attempts=failures,
                failures=failures,
                last_error=error,
                errors=[error],
                history=history(TaskState.RUNNING, TaskState.DEAD_LETTERED),
                dead_letter=DeadLetterInfo(error_type=error_type, message_id="dlq-1"),
            )
        )

    def letter(self, task_id: str, error_type: str, by_worker=True, replay_count=0):
        self.evidence.dead_letters.append(
            DeadLetterView(
                message_id=f"m{len(self.evidence.dead_letters)}",
                task_id=task_id,
                task_type=None,
                error_type=error_type,
                error_message="why",
                by_worker=by_worker,
                replay_count=replay_count,
            )
        )

    def store(self, record: TaskStatus) -> TaskStatus:
        self.evidence.records[record.task_id] = StoredStatus(record, self.next_generation())
        return record

    def execution(self, name: str, **changes) -> None:
        view = ExecutionView(name, True, "self", 0, True, 2.5)
        self.evidence.executions.append(dataclasses.replace(view, **changes))

    def violations(self, rule: Rule | None = None):
        found = check(self.evidence).violations
        return [v for v in found if rule is None or v.rule == rule]


@pytest.fixture
def campaign() -> Campaign:
    """A clean campaign: a success, a dead letter, a replaced task and an execution."""
    c = Campaign()
    c.succeeded("ok-1")
    c.dead_lettered("perm-1")
    c.dead_lettered("data-1", task_type="chaos_data_error", exponent=400)
    original = c.dead_lettered("data-2", task_type="chaos_data_error", exponent=999)
    # A --set replay replaced data-2: its dead letter is gone, its replacement succeeded.
    c.evidence.dead_letters = [d for d in c.evidence.dead_letters if d.task_id != "data-2"]
    c.store(original.model_copy(update={"replayed_as": "new-2"}))
    fields = {"tag": "tag-data-2", "exponent": 2}
    c.track("new-2", "chaos_data_error", fields, origin=REPLACEMENT, replay_of="data-2")
    c.store(
        TaskStatus(
            task_id="new-2",
            task_type="chaos_data_error",
            state=TaskState.SUCCEEDED,
            replay_of="data-2",
            history=history(TaskState.RUNNING, TaskState.SUCCEEDED),
            outputs=[c.part("new-2", fields, "1-bbbbbb", i, "chaos_data_error") for i in range(2)],
        )
    )
    c.execution("chaos-exec-00001")
    return c


def test_evidence_of_a_campaign_that_kept_every_promise_passes(campaign):
    result = check(campaign.evidence)

    assert result.violations == []
    assert result.outcomes == {"succeeded": 1, "dead_lettered": 2, "replaced": 1}


def test_a_succeeded_record_naming_outputs_of_two_runs_is_reported(campaign):
    fields = {"tag": "tag-mixed", "parts": 2}
    record = campaign.succeeded("mixed")
    other_run = campaign.part("mixed", fields, "3-cccccc", 1)
    campaign.store(record.model_copy(update={"outputs": [record.outputs[0], other_run]}))

    (violation,) = campaign.violations(Rule.OUTPUTS_MIXED_RUNS)
    assert violation.subject == "mixed"
    assert "2-aaaaaa" in violation.evidence and "3-cccccc" in violation.evidence


def test_an_output_that_says_another_run_wrote_it_is_reported(campaign):
    fields = {"tag": "tag-liar", "parts": 1}
    record = campaign.succeeded("liar", parts=1)
    # The object sits under run 2-aaaaaa, but its content is run 9-dddddd's.
    ref = record.outputs[0]
    forged = campaign.part("liar", fields, "9-dddddd", 0)
    obj = campaign.evidence.outputs[(forged.uri, forged.generation)]
    campaign.evidence.outputs[(ref.uri, ref.generation)] = dataclasses.replace(obj, uri=ref.uri)
    named = ref.model_copy(update={"crc32c": forged.crc32c})
    campaign.store(record.model_copy(update={"outputs": [named]}))

    (violation,) = campaign.violations(Rule.OUTPUTS_MIXED_RUNS)
    assert "run_id 9-dddddd under run 2-aaaaaa" in violation.evidence


def test_a_succeeded_record_missing_a_part_is_incomplete(campaign):
    record = campaign.succeeded("short", parts=3)
    campaign.store(record.model_copy(update={"outputs": record.outputs[:2]}))

    (violation,) = campaign.violations(Rule.OUTPUTS_INCOMPLETE)
    assert violation.subject == "short" and "part-2.json" in violation.evidence


def test_an_output_rewritten_or_gone_since_the_record_named_it_is_reported(campaign):
    record = campaign.succeeded("rewritten")
    first, second = record.outputs
    campaign.evidence.outputs[(first.uri, first.generation)] = OutputObject(
        first.uri, first.generation, "other_generation"
    )
    del campaign.evidence.outputs[(second.uri, second.generation)]

    assert [v.subject for v in campaign.violations(Rule.OUTPUT_GENERATION_CHANGED)] == ["rewritten"]
    assert [v.subject for v in campaign.violations(Rule.OUTPUT_MISSING)] == ["rewritten"]


def test_outputs_whose_generations_changed_since_first_seen_are_reported(campaign):
    record = campaign.succeeded("moved")
    campaign.evidence.first_outputs["moved"] = {
        ref.name: ref.generation - 500 for ref in record.outputs
    }

    (violation,) = campaign.violations(Rule.OUTPUT_GENERATION_CHANGED)
    assert violation.subject == "moved" and "first seen" in violation.evidence


def test_a_succeeded_task_in_the_dlq_is_reported(campaign):
    campaign.letter("ok-1", "chaos_transient")

    (violation,) = campaign.violations(Rule.SUCCEEDED_IN_DLQ)
    assert violation.subject == "ok-1" and "chaos_transient" in violation.evidence


def test_a_record_whose_history_regresses_is_reported(campaign):
    record = campaign.succeeded("back")
    backwards = history(TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.RUNNING)
    campaign.store(record.model_copy(update={"history": backwards, "state": TaskState.RUNNING}))

    (violation,) = campaign.violations(Rule.HISTORY_INVALID)
    assert violation.subject == "back" and "from succeeded" in violation.evidence


def test_a_final_record_older_than_the_watcher_saw_is_reported(campaign):
    stored = campaign.evidence.records["perm-1"]
    campaign.evidence.last_sightings["perm-1"] = Observation.of(
        dataclasses.replace(stored, generation=stored.generation + 10), at=12.0
    )

    (violation,) = campaign.violations(Rule.RECORD_REGRESSED)
    assert violation.subject == "perm-1" and "generation went back" in violation.evidence


def test_a_dead_letter_with_someone_elses_reason_is_reported(campaign):
    campaign.evidence.dead_letters = [
        d for d in campaign.evidence.dead_letters if d.task_id != "perm-1"
    ]
    campaign.letter("perm-1", "chaos_transient")

    (violation,) = campaign.violations(Rule.FOREIGN_REASON)
    assert violation.subject == "perm-1"
    assert (
        "chaos_transient" in violation.evidence and "chaos_permanent expected" in violation.evidence
    )


def test_a_dead_letter_pubsub_forwarded_itself_is_not_the_tasks_own(campaign):
    campaign.evidence.dead_letters = [
        d for d in campaign.evidence.dead_letters if d.task_id != "perm-1"
    ]
    campaign.letter("perm-1", "chaos_permanent", by_worker=False)

    (violation,) = campaign.violations(Rule.FOREIGN_REASON)
    assert "by pubsub" in violation.evidence


def test_a_task_dead_lettered_twice_is_reported(campaign):
    campaign.letter("perm-1", "chaos_permanent")

    (violation,) = campaign.violations(Rule.TWO_DEAD_LETTERS)
    assert violation.subject == "perm-1" and "2 dead letters" in violation.evidence


def test_a_dead_lettered_record_without_its_dead_letter_is_reported(campaign):
    campaign.evidence.dead_letters = [
        d for d in campaign.evidence.dead_letters if d.task_id != "perm-1"
    ]

    (violation,) = campaign.violations(Rule.DEAD_LETTER_MISSING)
    assert violation.subject == "perm-1"


def test_a_dead_lettered_record_that_still_says_pending_does_not_tell_the_truth(campaign):
    record = campaign.evidence.records["perm-1"].record
    info = record.dead_letter.model_copy(update={"pending": True})
    campaign.store(record.model_copy(update={"dead_letter": info}))

    (violation,) = campaign.violations(Rule.RECORD_UNTRUTHFUL)
    assert "pending" in violation.evidence


def test_a_task_meant_to_succeed_that_was_dead_lettered_is_an_unexpected_end(campaign):
    campaign.dead_lettered("flaky-1", task_type="chaos_flaky", fail_first=2)

    assert [v.subject for v in campaign.violations(Rule.UNEXPECTED_END)] == ["flaky-1"]


def test_a_task_still_retrying_whose_message_pubsub_dead_lettered_is_not_ended(campaign):
    record = campaign.dead_lettered("stuck", task_type="chaos_always_transient")
    campaign.evidence.dead_letters = [
        d for d in campaign.evidence.dead_letters if d.task_id != "stuck"
    ]
    campaign.letter("stuck", "delivery_attempts_exhausted", by_worker=False)
    campaign.store(
        record.model_copy(
            update={
                "state": TaskState.RETRYING,
                "failures": 4,
                "dead_letter": None,
                "history": history(TaskState.RUNNING, TaskState.RETRYING),
            }
        )
    )

    assert [v.rule for v in campaign.violations() if v.subject == "stuck"] == [
        Rule.NOT_ENDED,
        Rule.FOREIGN_REASON,
    ]


def test_a_tracked_task_without_any_record_is_not_ended(campaign):
    campaign.track("lost", "chaos_quick", {"tag": "tag-lost"})

    (violation,) = campaign.violations(Rule.NOT_ENDED)
    assert violation.subject == "lost" and "no status record" in violation.evidence


def test_a_replayed_life_the_record_never_reached_is_not_ended(campaign):
    campaign.evidence.tracked["perm-1"].min_replay_count = 1

    (violation,) = campaign.violations(Rule.NOT_ENDED)
    assert violation.subject == "perm-1" and "replay 1" in violation.evidence


def test_a_replacement_no_replay_made_is_unlinked(campaign):
    record = campaign.evidence.records["perm-1"].record
    campaign.store(record.model_copy(update={"replayed_as": "nobody"}))
    campaign.evidence.dead_letters = [
        d for d in campaign.evidence.dead_letters if d.task_id != "perm-1"
    ]

    (violation,) = campaign.violations(Rule.REPLACEMENT_UNLINKED)
    assert violation.subject == "perm-1" and "nobody" in violation.evidence


def test_a_replacement_is_held_to_its_own_expectation(campaign):
    new = campaign.evidence.records["new-2"].record
    campaign.store(new.model_copy(update={"outputs": []}))

    (violation,) = campaign.violations(Rule.OUTPUTS_INCOMPLETE)
    assert violation.subject == "new-2"


def test_an_unaccepted_submission_that_ran_is_checked_like_any_task(campaign):
    spec = TaskSpec(7, "s1-000007", "chaos_permanent", {"tag": "s1-000007"})
    campaign.evidence.unaccepted[spec.tag] = spec
    campaign.dead_lettered("unacc", task_type="chaos_permanent")
    del campaign.evidence.tracked["unacc"]
    letter = campaign.evidence.dead_letters[-1]
    campaign.evidence.dead_letters[-1] = dataclasses.replace(letter, payload={"tag": spec.tag})
    campaign.letter("unacc", "chaos_permanent")

    result = check(campaign.evidence)
    assert result.unaccepted_ran == {"dead_lettered": 1}
    assert [(v.rule, v.subject) for v in result.violations] == [(Rule.TWO_DEAD_LETTERS, "unacc")]


def test_records_and_dead_letters_no_submission_accounts_for_are_reported(campaign):
    campaign.store(
        TaskStatus(
            task_id="stranger",
            task_type="chaos_quick",
            state=TaskState.RUNNING,
            history=history(TaskState.RUNNING),
        )
    )
    campaign.letter("ghost", "chaos_permanent")

    assert [v.subject for v in campaign.violations(Rule.UNKNOWN_TASK)] == ["stranger"]
    assert [v.subject for v in campaign.violations(Rule.UNKNOWN_DEAD_LETTER)] == ["ghost"]


def test_an_execution_that_never_exited_is_reported(campaign):
    campaign.execution("chaos-exec-00002", ended=False, ended_by=None, returncode=None)

    (violation,) = campaign.violations(Rule.EXECUTION_HUNG)
    assert violation.subject == "chaos-exec-00002" and "still running" in violation.evidence


def test_an_execution_that_exited_past_its_bound_is_reported(campaign):
    campaign.execution("chaos-exec-00003", exited_within_bound=False, exit_lag_seconds=131.0)

    (violation,) = campaign.violations(Rule.EXECUTION_HUNG)
    assert "131.0s after its last work" in violation.evidence and "bound 90s" in violation.evidence


def test_a_process_left_running_after_the_campaign_is_reported(campaign):
    campaign.evidence.leftover_processes = ["api (process group 4242: pids [4242])"]

    (violation,) = campaign.violations(Rule.PROCESS_LEFT)
    assert "4242" in violation.subject


def test_a_task_pubsub_dead_lettered_and_a_browse_reconciled_is_one_foreign_reason(campaign):
    record = campaign.dead_lettered("forwarded", task_type="chaos_always_transient")
    campaign.evidence.dead_letters = [
        d for d in campaign.evidence.dead_letters if d.task_id != "forwarded"
    ]
    campaign.letter("forwarded", "delivery_attempts_exhausted", by_worker=False)
    error = ErrorInfo(type="delivery_attempts_exhausted", message="5 deliveries")
    campaign.store(
        record.model_copy(
            update={
                "failures": 3,
                "last_error": error,
                "dead_letter": DeadLetterInfo(error_type=error.type, by="pubsub"),
            }
        )
    )

    assert [v.rule for v in campaign.violations() if v.subject == "forwarded"] == [
        Rule.FOREIGN_REASON
    ]


def test_a_dead_lettered_record_counting_other_failures_than_its_type_makes_is_untruthful(
    campaign,
):
    record = campaign.evidence.records["perm-1"].record
    campaign.store(record.model_copy(update={"failures": 2}))

    (violation,) = campaign.violations(Rule.RECORD_UNTRUTHFUL)
    assert violation.subject == "perm-1" and "failures 2, 1 expected" in violation.evidence
