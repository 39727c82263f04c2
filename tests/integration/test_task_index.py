"""The transition journal and what the dashboard reads from it, on the real GCS emulator."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from background_worker.worker import drain_subscription
from task_api import close_app, create_app
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.journal import JOURNAL_PREFIX, STATS_PREFIX, Journal, entries_of
from taskcore.status import StatusStore, TaskState, TaskStatus
from taskcore.task_index import PageCursor, TaskIndex
from tests.integration.helpers import publish_tasks

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable time.time() for a Journal: where its flushes land."""

    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, when: datetime) -> Clock:
        self.now = when.timestamp()
        return self


@pytest.fixture
def bucket(pipeline):
    return make_bucket(pipeline, storage_client(pipeline))


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as pool:
        yield pool


@pytest.fixture
def index(bucket, pool):
    return TaskIndex(bucket, StatusStore(bucket).get, pool)


def journaled(bucket, writer: str = "test-writer", clock: Clock | None = None):
    """A Journal (flushed by hand) and a StatusStore that feeds it."""
    journal = Journal(bucket, writer, clock=clock or Clock(T0))
    return journal, StatusStore(bucket, on_written=journal.written)


def record(task_id: str, state: TaskState, at: datetime, task_type="data_transformation"):
    return TaskStatus(task_id=task_id, task_type=task_type, state=state, updated_at=at)


def ids(page) -> list[str]:
    return [task.task_id for task in page.tasks]


def test_records_written_through_a_journaled_store_are_listed_newest_change_first(bucket, index):
    journal, store = journaled(bucket)
    for i in range(5):
        store.create(record(f"t{i}", TaskState.QUEUED, T0 + timedelta(seconds=i)))
    journal.flush()

    page = index.page(limit=10)

    assert ids(page) == ["t4", "t3", "t2", "t1", "t0"]
    assert page.next_cursor is None, "the journal was read to its end"


def test_a_page_shows_each_record_as_it_is_now(bucket, index):
    journal, store = journaled(bucket)
    store.create(record("t1", TaskState.QUEUED, T0))
    journal.flush()
    # Changed by a store that journals nothing (or whose flush has not happened yet).
    StatusStore(bucket).transition("t1", lambda r: r.entering(TaskState.RUNNING, T0, attempts=1))

    (task,) = index.page().tasks

    assert task.state == TaskState.RUNNING and task.attempts == 1


def test_a_state_filter_shows_the_tasks_whose_newest_change_is_that_state(bucket, index):
    journal, store = journaled(bucket)
    store.create(record("dead", TaskState.DEAD_LETTERED, T0))
    store.create(record("done", TaskState.SUCCEEDED, T0 + timedelta(seconds=1)))
    store.create(record("revived", TaskState.DEAD_LETTERED, T0 + timedelta(seconds=2)))
    store.transition("revived", lambda r: r.entering(TaskState.QUEUED, T0, replay_count=1))
    journal.flush()

    assert ids(index.page(state=TaskState.DEAD_LETTERED)) == ["dead"]
    assert ids(index.page(state=TaskState.QUEUED)) == ["revived"]
    assert ids(index.page(state=TaskState.RUNNING)) == []


def test_pages_continue_below_their_cursor_with_no_task_twice_and_none_missed(bucket, index):
    clock = Clock(T0)
    journal, store = journaled(bucket, clock=clock)
    for i in range(23):
        at = T0 + timedelta(seconds=20 * i)
        store.create(record(f"t{i:02d}", TaskState.SUCCEEDED, at))
        if i % 4 == 3:  # flushed every few records, as time goes by: many minute groups
            journal._clock = clock.at(at + timedelta(seconds=5))
            journal.flush()
    journal.flush()

    seen, cursor, pages = [], None, 0
    while True:
        page = index.page(limit=5, cursor=cursor)
        seen += ids(page)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = PageCursor.decode(page.next_cursor.encode())

    assert seen == [f"t{i:02d}" for i in reversed(range(23))]
    assert pages == 5


def test_an_entry_flushed_minutes_late_still_counts_as_its_task_newest(bucket, index):
    # The API wrote `queued` at 12:00:50 but flushed at 12:02; the worker wrote `succeeded`
    # at 12:00:55 and flushed at once: the older entry sits in the newer journal group.
    api, api_store = journaled(bucket, "api-x", Clock(T0 + timedelta(minutes=2)))
    worker, worker_store = journaled(bucket, "worker-y", Clock(T0 + timedelta(seconds=56)))
    api_store.create(record("late", TaskState.QUEUED, T0 + timedelta(seconds=50)))
    worker_store.transition(
        "late",
        lambda r: r.entering(TaskState.SUCCEEDED, T0, updated_at=T0 + timedelta(seconds=55)),
    )
    worker.flush()
    api.flush()

    assert ids(index.page(state=TaskState.SUCCEEDED)) == ["late"]
    assert ids(index.page(state=TaskState.QUEUED)) == []


def test_a_page_stops_at_its_reading_budget_and_says_how_far_back_it_looked(bucket, pool, index):
    clock = Clock(T0)
    journal, store = journaled(bucket, clock=clock)
    store.create(record("old-failure", TaskState.DEAD_LETTERED, T0))
    journal.flush()
    for minute in range(1, 6):
        when = T0 + timedelta(minutes=minute)
        store.create(record(f"ok{minute}", TaskState.SUCCEEDED, when))
        journal._clock = clock.at(when)
        journal.flush()
    frugal = TaskIndex(bucket, StatusStore(bucket).get, pool, max_objects=2)

    short = frugal.page(state=TaskState.DEAD_LETTERED)
    rest = frugal.page(state=TaskState.DEAD_LETTERED, cursor=short.next_cursor)
    while not rest.tasks and rest.next_cursor is not None:
        rest = frugal.page(state=TaskState.DEAD_LETTERED, cursor=rest.next_cursor)

    assert short.tasks == [] and short.journal_objects == 2
    assert short.scanned_to == T0 + timedelta(minutes=4)
    assert ids(rest) == ["old-failure"]
    assert ids(index.page(state=TaskState.DEAD_LETTERED)) == ["old-failure"]


def test_a_record_gone_by_retention_is_left_out(bucket, index):
    journal, store = journaled(bucket)
    store.create(record("kept", TaskState.SUCCEEDED, T0))
    store.create(record("expired", TaskState.SUCCEEDED, T0 + timedelta(seconds=1)))
    journal.flush()
    bucket.blob("status/expired.json").delete()

    assert ids(index.page()) == ["kept"]


def test_a_failed_flush_keeps_its_entries_for_the_next_one(bucket, index, monkeypatch):
    journal, store = journaled(bucket)
    store.create(record("t1", TaskState.QUEUED, T0))
    monkeypatch.setattr(journal, "bucket", None)  # storage unreachable: every write fails
    journal.flush()
    monkeypatch.setattr(journal, "bucket", bucket)
    store.create(record("t2", TaskState.QUEUED, T0 + timedelta(seconds=1)))
    journal.flush()

    assert journal.flush_failures == 1
    assert ids(index.page()) == ["t2", "t1"]


def test_activity_sums_every_writer_by_minute_and_counts_what_runs_now(bucket, index):
    now = T0 + timedelta(minutes=30)
    first, first_store = journaled(bucket, "worker-a", Clock(now))
    second, second_store = journaled(bucket, "worker-b", Clock(now))
    gone, gone_store = journaled(bucket, "worker-c", Clock(now - timedelta(minutes=5)))
    minute = now - timedelta(minutes=1)
    for i in range(3):
        first_store.create(record(f"a{i}", TaskState.SUCCEEDED, minute))
    second_store.create(record("b0", TaskState.RETRYING, minute))
    second_store.create(record("b1", TaskState.RUNNING, now))
    gone_store.create(record("c0", TaskState.RUNNING, now - timedelta(minutes=5)))
    for journal in (first, second, gone):
        journal.flush()

    activity = index.activity(now)

    counts = dict((when, c) for when, c in activity.minutes)
    assert counts[minute.replace(second=0)] == {"succeeded": 3, "retrying": 1}
    assert len(activity.minutes) == 60
    assert activity.running_now == 1, "the silent writer's running task is not counted"
    assert activity.totals()["succeeded"] == 3 and activity.totals()["running"] == 2
    assert (activity.writers, activity.live_writers) == (3, 2)


def test_a_closed_writer_runs_nothing(bucket, index):
    journal, store = journaled(bucket, "worker-a", Clock(T0))
    store.create(record("r", TaskState.RUNNING, T0))
    journal.close()

    assert index.activity(T0).running_now == 0


def test_a_worker_execution_and_the_api_journal_what_they_write(pipeline, bucket, index):
    app = create_app(pipeline)
    accepted = app.test_client().post(
        "/submit-task", json={"task_type": "data_transformation", "dataset_size": 3}
    )
    close_app(app)
    (published,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 2})])
    drain_subscription(pipeline)

    task_id = accepted.get_json()["task_id"]
    # Each writer (the API, the execution) has its own journal objects: order by time.
    entries = [
        entry
        for blob in bucket.list_blobs(prefix=JOURNAL_PREFIX)
        for entry in entries_of(blob.download_as_bytes())
    ]
    states = {}
    for entry in sorted(entries, key=lambda e: e.at):
        states.setdefault(entry.task_id, []).append(entry.state)
    assert states[task_id][0] == "queued" and states[task_id][-1] == "succeeded"
    assert states[published][-1] == "succeeded"
    assert set(ids(index.page())) == {task_id, published}
    assert index.activity().totals()["succeeded"] == 2
    assert list(bucket.list_blobs(prefix=STATS_PREFIX)), "each writer left its stats"
