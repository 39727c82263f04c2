"""The drain: what counts as ended, and when it stops waiting (on an in-memory bucket)."""

from __future__ import annotations

import threading

from chaos.drain import Drain, has_ended
from chaos.ledger import ACCEPTED, Ledger, Submission
from chaos.workload import TaskSpec
from taskcore.memory_bucket import MemoryBucket
from taskcore.status import DeadLetterInfo, StatusStore, StoredStatus, TaskState, TaskStatus


def record(task_id: str, state: TaskState, **fields) -> TaskStatus:
    return TaskStatus(task_id=task_id, task_type="chaos_quick", state=state, **fields)


def stored(state: TaskState, **fields) -> StoredStatus:
    return StoredStatus(record("t", state, **fields), 1)


def test_what_counts_as_an_end():
    confirmed = DeadLetterInfo(error_type="chaos_permanent")
    pending = DeadLetterInfo(error_type="chaos_permanent", pending=True)

    assert has_ended(stored(TaskState.SUCCEEDED))
    assert has_ended(stored(TaskState.CANCELLED))
    assert has_ended(stored(TaskState.DEAD_LETTERED, dead_letter=confirmed))
    assert not has_ended(stored(TaskState.DEAD_LETTERED, dead_letter=pending))
    assert not has_ended(stored(TaskState.RETRYING))
    assert not has_ended(None)
    # A plain replay published life 1: the record of life 0 has not ended it yet.
    assert not has_ended(stored(TaskState.SUCCEEDED), min_replay_count=1)
    assert has_ended(stored(TaskState.SUCCEEDED, replay_count=1), min_replay_count=1)


class Pipeline:
    """A ledger and a bucket of records the test moves along."""

    def __init__(self) -> None:
        self.bucket = MemoryBucket("drain-test")
        self.store = StatusStore(self.bucket)
        self.ledger = Ledger(max_failures=5)

    def accept(self, task_id: str) -> None:
        spec = TaskSpec(0, f"tag-{task_id}", "chaos_quick", {"tag": f"tag-{task_id}"})
        self.ledger.submitted(Submission(spec, 0.0, ACCEPTED, 202, task_id))

    def write(self, task_id: str, state: TaskState, **fields) -> None:
        current = self.store.read(task_id)
        self.store.write(record(task_id, state, **fields), current.generation if current else None)

    def drain(self, **options) -> Drain:
        options.setdefault("poll_seconds", 0.01)
        return Drain(self.ledger, self.bucket, **options)


def test_the_drain_waits_for_tracked_tasks_then_for_records_nobody_accepted():
    pipeline = Pipeline()
    pipeline.accept("a")
    pipeline.write("a", TaskState.RUNNING)
    pipeline.write("ran-after-a-503", TaskState.RUNNING)
    moves = [
        ("a", TaskState.SUCCEEDED),
        ("ran-after-a-503", TaskState.SUCCEEDED),
    ]
    reads = []

    class Watching(Drain):
        def _read(self, task_id):
            reads.append(task_id)
            if len(reads) % 3 == 0 and moves:
                pipeline.write(*moves.pop(0))
            return super()._read(task_id)

    result = Watching(pipeline.ledger, pipeline.bucket, poll_seconds=0.01).wait(timeout=10)

    assert result.ended and result.unended == [] and not moves
    assert result.untracked_seen == 1


def test_the_drain_gives_up_on_tasks_that_stop_changing():
    pipeline = Pipeline()
    pipeline.accept("stuck")
    pipeline.write("stuck", TaskState.RETRYING, failures=4)

    result = pipeline.drain(stall_seconds=0.2).wait(timeout=30)

    assert not result.ended and result.stalled and result.unended == ["stuck"]
    assert result.seconds < 5


def test_the_drain_stops_at_its_deadline_while_tasks_still_change():
    pipeline = Pipeline()
    pipeline.accept("busy")
    pipeline.write("busy", TaskState.RUNNING)
    stop = threading.Event()

    def keep_renewing():
        while not stop.wait(0.01):
            pipeline.write("busy", TaskState.RUNNING, attempts=1)

    renewer = threading.Thread(target=keep_renewing)
    renewer.start()
    try:
        result = pipeline.drain(stall_seconds=60).wait(timeout=0.3)
    finally:
        stop.set()
        renewer.join()

    assert not result.ended and not result.stalled and result.unended == ["busy"]


def test_a_dead_letter_left_pending_counts_as_ended_once_it_has_settled():
    pipeline = Pipeline()
    pipeline.accept("pending")
    pending = DeadLetterInfo(error_type="chaos_permanent", pending=True)
    pipeline.write("pending", TaskState.DEAD_LETTERED, dead_letter=pending)

    result = pipeline.drain(settle_seconds=0.1).wait(timeout=10)

    assert result.ended and result.unended == []
