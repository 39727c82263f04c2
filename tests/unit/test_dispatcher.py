"""The dispatcher's decisions, on an in-memory bucket, a fake Run Admin API and a fake clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.jobs import ExecutionView, Started
from dispatcher.periodic import due_firing, firing_task_id, latest_firing
from dispatcher.policy import QueuePolicy, decide, queue_policies
from dispatcher.service import Dispatcher
from taskcore.demand import DemandStore
from taskcore.envelope import build_envelope
from taskcore.memory_bucket import MemoryBucket
from taskcore.payloads import TaskPayload
from taskcore.schedule import ScheduleStore
from taskcore.settings import Settings
from taskcore.status import StatusStore, TaskState
from taskcore.tasks import TaskRegistry, TaskType

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeJobs:
    """The Run Admin API as the dispatcher sees it: executions it started, their tasks."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.runs: list[tuple[str, int, dict]] = []
        self.views: dict[str, list[ExecutionView]] = {}

    def run(self, job: str, task_count: int, env: dict) -> Started:
        name = f"{job}-{len(self.runs)}"
        self.runs.append((job, task_count, env))
        self.views.setdefault(job, []).insert(0, ExecutionView(name, self.clock(), task_count))
        return Started(name, task_count)

    def executions(self, job: str) -> list[ExecutionView]:
        return list(self.views.get(job, []))

    def finish_all(self) -> None:
        for job, views in self.views.items():
            self.views[job] = [ExecutionView(v.name, v.created, 0) for v in views]

    def started_tasks(self) -> int:
        return sum(count for _, count, _ in self.runs)

    def close(self) -> None:
        pass


class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, dict]] = []

    def publish(self, topic: str, data: bytes, attributes) -> str:
        self.messages.append((topic, data, dict(attributes)))
        return f"m{len(self.messages)}"

    def publish_task(self, envelope) -> str:
        data, attributes = envelope.to_message()
        return self.publish(envelope.queue, data, attributes)


class Nightly(TaskPayload):
    days: int = 1


def _handler(payload, context):
    return None


def registry(**periodic) -> TaskRegistry:
    types = TaskRegistry()
    types.register(TaskType(name="work", handler=_handler, payload_model=Nightly))
    types.register(
        TaskType(name="urgent_work", handler=_handler, payload_model=Nightly, queue="urgent")
    )
    if periodic:
        types.register(
            TaskType(name="nightly", handler=_handler, payload_model=Nightly, **periodic)
        )
    return types


@pytest.fixture
def world():
    clock = Clock()
    bucket = MemoryBucket()
    jobs = FakeJobs(clock)
    publisher = FakePublisher()
    settings = Settings.from_env({}, bucket_name=bucket.name, dispatch_cooldown_seconds=2)

    def make(types: TaskRegistry | None = None, **overrides) -> Dispatcher:
        return Dispatcher(
            settings.model_copy(update=overrides),
            types or registry(),
            bucket,
            publisher,
            jobs,
            clock=clock,
        )

    return clock, bucket, jobs, publisher, make


# --- sizing --------------------------------------------------------------------------------


def test_a_queue_wants_one_task_per_backlog_share_up_to_its_cap():
    policy = QueuePolicy("default", "job", max_tasks=10, backlog_per_task=100)
    assert decide(policy, 0, 0).start == 0
    assert decide(policy, 1, 0).start == 1
    assert decide(policy, 250, 0).start == 3
    assert decide(policy, 250, 2).start == 1
    assert decide(policy, 1_000_000, 0).start == 10
    assert decide(policy, 1_000_000, 10).start == 0


def test_max_concurrency_caps_parallel_tasks_and_each_tasks_concurrency():
    policy = QueuePolicy(
        "default",
        "job",
        max_tasks=10,
        backlog_per_task=10,
        max_concurrency=40,
        worker_concurrency=16,
    )
    decision = decide(policy, 10_000, 0)
    assert decision.start == 2  # 40 // 16
    assert decision.start * decision.concurrency <= 40


def test_queue_policies_come_from_the_queues_setting_with_defaults():
    settings = Settings.from_env(
        {}, queues=json.dumps({"urgent": {"max_tasks": 3, "job": "fast-lane"}})
    )
    policies = queue_policies(settings, ["urgent", "batch"])
    assert policies["urgent"].job == "fast-lane" and policies["urgent"].max_tasks == 3
    assert policies["batch"].job == f"{settings.worker_job_name}-batch"
    assert policies["default"].job == settings.worker_job_name


def test_a_queues_setting_that_is_not_a_json_object_is_refused():
    with pytest.raises(Exception, match="QUEUES|queues"):
        Settings.from_env({"QUEUES": "[1, 2]"})


# --- executions on demand -----------------------------------------------------------------


def test_accepted_tasks_start_an_execution_for_their_queue(world):
    clock, _, jobs, _, make = world
    dispatcher = make()
    dispatcher.note_demand("urgent", 3)
    decision = dispatcher.dispatch("urgent")
    assert decision.start == 1
    job, count, env = jobs.runs[0]
    assert (job, count) == ("background-worker-urgent", 1)
    assert env["QUEUE"] == "urgent"


def test_a_burst_of_ten_thousand_starts_a_bounded_number_of_executions(world):
    clock, _, jobs, _, make = world
    # Three API instances, each poking for every task it accepts, over a minute.
    dispatchers = [make() for _ in range(3)]
    for _second in range(60):
        for dispatcher in dispatchers:
            for _ in range(10_000 // 180):
                dispatcher.note_demand("default")
                dispatcher.dispatch("default")
        clock.advance(1)
    assert jobs.started_tasks() <= 10, jobs.runs
    assert len(jobs.runs) <= 31  # at most one decision per 2 s cooldown, across instances


def test_concurrent_dispatchers_decide_once_per_cooldown(world):
    clock, _, jobs, _, make = world
    first, second = make(), make()
    first.note_demand("default", 500)
    second.note_demand("default", 500)
    assert first.dispatch("default") is not None
    assert second.dispatch("default") is None  # the lease is held
    assert len(jobs.runs) == 1
    clock.advance(2.1)
    decision = second.dispatch("default")
    # Its demand is decided on now, beside the tasks the first one started.
    assert decision is not None and decision.backlog == 500 and decision.running == 5
    assert jobs.started_tasks() == 5


def test_a_queue_falling_behind_gets_tasks_for_rate_times_wait(world):
    clock, bucket, jobs, _, make = world
    dispatcher = make()
    dispatcher.note_demand("default", 50)
    dispatcher.dispatch("default")  # one task for the first 50
    for _ in range(10):  # then 20 tasks/s for 20 s, decided on every 2 s
        clock.advance(2)
        dispatcher.note_demand("default", 40)
        assert dispatcher.dispatch("default").start == 0  # 40 new ones: one task is enough
    # Then no new task, but the busy task reports that what it pulls waited 30 s.
    clock.advance(2)
    DemandStore(bucket).report_lag("default", "exec-0", clock(), 30.0)
    (decision,) = dispatcher.tick().decisions
    # Arrivals 450 in the last minute -> 7.5/s x 30 s = 225 waiting -> 3 tasks wanted.
    assert decision.backlog == 225 and decision.start == 2


def test_a_queue_that_keeps_up_is_not_given_more_tasks(world):
    clock, bucket, jobs, _, make = world
    dispatcher = make()
    for _ in range(30):  # a steady 20 tasks/s that one task handles
        dispatcher.note_demand("default", 20)
        clock.advance(1)
        dispatcher.dispatch("default")
        DemandStore(bucket).report_lag("default", "exec-0", clock(), 0.2)
    assert jobs.started_tasks() == 1


def test_demand_that_arrives_while_the_last_execution_idles_out_starts_another(world):
    clock, _, jobs, _, make = world
    dispatcher = make()
    dispatcher.note_demand("default")
    dispatcher.dispatch("default")
    clock.advance(5)
    # A task arrives while that execution still runs: it is covered... or is it?
    dispatcher.note_demand("default")
    assert dispatcher.dispatch("default").start == 0
    clock.advance(3)
    jobs.finish_all()  # it exited without finding the queue empty after the task came
    decision = dispatcher.tick()
    assert [d.start for d in decision.decisions] == [1]
    assert len(jobs.runs) == 2


def test_demand_a_worker_saw_drained_starts_nothing_more(world):
    clock, bucket, jobs, _, make = world
    dispatcher = make()
    dispatcher.note_demand("default")
    dispatcher.dispatch("default")
    clock.advance(5)
    dispatcher.note_demand("default")
    dispatcher.dispatch("default")
    clock.advance(3)
    DemandStore(bucket).mark_drained("default", clock())  # it found the queue empty after
    jobs.finish_all()
    clock.advance(3)
    assert dispatcher.tick().decisions == [] or all(
        d.start == 0 for d in dispatcher.tick().decisions
    )
    assert len(jobs.runs) == 1


def test_an_idle_tick_starts_nothing_and_reads_little(world):
    clock, _, jobs, publisher, make = world
    report = make().tick()
    assert report.as_dict() == {"published": [], "dropped": [], "fired": [], "started": {}}
    assert jobs.runs == [] and publisher.messages == []


def test_a_worker_that_stopped_with_work_left_is_replaced(world):
    clock, bucket, jobs, _, make = world
    dispatcher = make()
    dispatcher.note_demand("default", 1000)
    dispatcher.dispatch("default")  # 10 tasks
    clock.advance(540)
    for index in range(3):
        ScheduleStore(bucket).add_wakeup(clock(), "default", replaces=f"exec-{index}")
    clock.advance(1)
    report = dispatcher.tick()
    assert report.as_dict()["started"] == {"default": 3}


# --- delayed tasks --------------------------------------------------------------------------


def _delay(bucket, types, due: datetime, task_id: str = "t-delayed") -> str:
    envelope, _ = build_envelope(types, "work", {"days": 2}, task_id=task_id)
    data, attributes = envelope.to_message()
    ScheduleStore(bucket).add_task(due, envelope.queue, envelope.task_id, data, attributes)
    from taskcore.lifecycle import Delivery, scheduled

    StatusStore(bucket).create(
        scheduled(Delivery(task_id=task_id, task_type="work", message_id=""), due, T0)
    )
    return task_id


def test_a_delayed_task_is_published_when_due_and_never_before(world):
    clock, bucket, jobs, publisher, make = world
    dispatcher = make()
    task_id = _delay(bucket, dispatcher.registry, T0 + timedelta(seconds=30))
    clock.advance(29.9)
    assert dispatcher.tick().published == [] and publisher.messages == []
    clock.advance(0.2)
    report = dispatcher.tick()
    assert report.published == [task_id]
    assert len(publisher.messages) == 1
    assert StatusStore(bucket).get(task_id).state == TaskState.QUEUED
    assert report.as_dict()["started"] == {"default": 1}
    assert dispatcher.tick().published == []  # once


def test_a_delayed_task_cancelled_before_it_is_due_is_never_published(world):
    clock, bucket, jobs, publisher, make = world
    from taskcore.lifecycle import request_cancel

    dispatcher = make()
    task_id = _delay(bucket, dispatcher.registry, T0 + timedelta(seconds=10))
    StatusStore(bucket).transition(task_id, request_cancel(T0))
    clock.advance(11)
    report = dispatcher.tick()
    assert report.dropped == [task_id] and publisher.messages == []
    assert StatusStore(bucket).get(task_id).state == TaskState.CANCELLED


def test_a_wakeup_starts_an_execution_when_the_backoff_ends(world):
    clock, bucket, jobs, _, make = world
    dispatcher = make()
    ScheduleStore(bucket).add_wakeup(T0 + timedelta(seconds=60), "urgent")
    clock.advance(59)
    assert make().tick().decisions == []
    clock.advance(2)
    assert dispatcher.tick().as_dict()["started"] == {"urgent": 1}


# --- periodic tasks -------------------------------------------------------------------------


def test_each_firing_has_an_id_of_its_own_and_the_same_firing_runs_once(world):
    clock, bucket, jobs, publisher, make = world
    dispatcher = make(registry(schedule="0 3 * * *", timezone="Europe/Paris"))
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 03:00 in Paris
    first = dispatcher.fire("nightly", at)
    second = dispatcher.fire("nightly", at)
    assert first == second == firing_task_id("nightly", at) == "cron-nightly-20261201T020000Z"
    assert len(publisher.messages) == 1
    assert dispatcher.fire("nightly", at + timedelta(days=1)) != first


def test_missed_firings_coalesce_into_the_latest_one():
    nightly = TaskType(
        name="nightly",
        handler=_handler,
        payload_model=Nightly,
        schedule="0 3 * * *",
        timezone="Europe/Paris",
    )
    last = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert due_firing(nightly, last, now) == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert due_firing(nightly, datetime(2026, 11, 30, 2, 0, tzinfo=UTC), now) is None
    # Daylight saving time: 03:00 Paris is 01:00 UTC in summer.
    assert latest_firing(nightly, datetime(2026, 7, 1, 12, tzinfo=UTC)).hour == 1


def test_the_tick_fires_a_due_schedule_once_and_a_new_schedule_starts_from_now(world):
    clock, bucket, jobs, publisher, make = world
    types = registry(schedule="*/5 * * * *")
    dispatcher = make(types)
    assert dispatcher.tick().fired == []  # first sight: nothing before now is fired
    clock.advance(5 * 60)
    fired = dispatcher.tick().fired
    assert fired == [firing_task_id("nightly", T0 + timedelta(minutes=5))]
    assert make(types).tick().fired == []  # another dispatcher: fired already
    clock.advance(60 * 60)  # an hour with no tick: twelve firings missed
    assert len(dispatcher.tick().fired) == 1


def test_bootstrap_refuses_a_queue_whose_topic_is_the_dead_letter_topic():
    from taskcore.bootstrap import bootstrap
    from taskcore.errors import ConfigurationError

    settings = Settings.from_env({}, dlq_topic_name="background-tasks-dlq")
    with pytest.raises(ConfigurationError, match="dead-letter topic"):
        # No client is touched: the check comes before anything is created.
        bootstrap(settings, publisher=object(), subscriber=object(), gcs=object(), queues=["dlq"])
