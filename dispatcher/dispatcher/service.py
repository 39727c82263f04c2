"""The Dispatcher: poke (tasks were accepted), tick (what came due; each queue), fire (a
periodic task's firing).

Any number of dispatchers run at once (API processes and instances, the dev stack). A
decision to start executions for a queue is taken under a lease, `dispatch/<queue>.json`,
written conditionally (generation match): of all dispatchers, one decides per queue per
DISPATCH_COOLDOWN_SECONDS, and it starts only the tasks missing beside those already
running. So 10,000 submissions in a minute start a bounded number of executions, each logged
(`execution_started`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from datetime import datetime, timedelta

from google.api_core import exceptions as gexc
from google.cloud import storage

from dispatcher.jobs import JobsGateway
from dispatcher.periodic import due_firing, firing_task_id, latest_firing
from dispatcher.policy import Decision, QueuePolicy, decide, queue_policies
from taskcore import lifecycle
from taskcore.demand import ARRIVAL_WINDOW_SECONDS, DemandStore, covered
from taskcore.envelope import build_envelope
from taskcore.events import Event
from taskcore.lifecycle import Delivery
from taskcore.publishing import Publisher
from taskcore.schedule import TASK, ScheduledItem, ScheduleStore
from taskcore.settings import Settings
from taskcore.status import ENDED, OnWritten, StatusStore, TaskState, utcnow
from taskcore.tasks import TaskRegistry

log = logging.getLogger(__name__)

PERIODIC_PREFIX = "schedules/"
# Messages that waited this long mean the running tasks do not keep up with arrivals.
FALLING_BEHIND_SECONDS = 5.0


@dataclass
class TickReport:
    """What one tick did."""

    published: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "published": self.published,
            "dropped": self.dropped,
            "fired": self.fired,
            "started": {d.queue: d.start for d in self.decisions if d.start},
        }


class Dispatcher:
    """Starts worker executions on demand and publishes what comes due."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        bucket: storage.Bucket,
        publisher: Publisher,
        jobs: JobsGateway | None,
        *,
        backlog=None,
        clock: Callable[[], datetime] = utcnow,
        on_written: OnWritten | None = None,
    ) -> None:
        self.settings = settings
        # The time, as the simulation (docs/capacity.md) and tests move it.
        self.clock = clock
        self.registry = registry
        self.bucket = bucket
        self.publisher = publisher
        self.jobs = jobs
        self.policies = queue_policies(settings, registry.queues())
        self.status = StatusStore(bucket, on_written=on_written)
        self.schedule = ScheduleStore(bucket)
        # Reads a queue's backlog from Pub/Sub (None: not known here).
        self._backlog = backlog or (lambda queue: None)
        self.demand = DemandStore(bucket)
        self._pending: Counter[str] = Counter()
        self._demand_at: dict[str, datetime] = {}
        self._lock = threading.Lock()

    # --- demand: tasks were accepted -------------------------------------------------------

    def note_demand(self, queue: str, count: int = 1, at: datetime | None = None) -> None:
        """Tasks were queued for `queue` just now (the next dispatch for it accounts for them)."""
        at = at or self.clock()
        with self._lock:
            self._pending[queue] += count
            if self._demand_at.get(queue) is None or at > self._demand_at[queue]:
                self._demand_at[queue] = at

    def pending_queues(self) -> list[str]:
        with self._lock:
            return [queue for queue, count in self._pending.items() if count]

    def dispatch(self, queue: str, backlog_hint: int = 0, *, replace: int = 0) -> Decision | None:
        """Decide for `queue` under its lease and start what is missing.

        None when no decision was taken: another dispatcher holds the lease (this one's
        demand stays pending for its next attempt), or the queue is not dispatched here.
        """
        policy = self.policies.get(queue)
        if policy is None or self.jobs is None:
            return None
        now = self.clock()
        lease = self.demand.read_lease(queue)
        if lease.held(now):
            return None
        with self._lock:
            pending = self._pending.get(queue, 0)
            local_demand = self._demand_at.get(queue)
        demand_at = max(filter(None, (lease.demand_at, local_demand)), default=None)
        executions = self.jobs.executions(policy.job)
        running = sum(execution.running_tasks for execution in executions)
        seen = covered(
            demand_at,
            [execution.created for execution in executions],
            self.demand.drained_since(queue) if demand_at else None,
        )
        arrivals = lease.arrivals_with(pending, now)
        known = self._backlog(queue) or 0
        # How long messages wait now, as busy workers report it: by Little's law, the
        # backlog is about the arrival rate times that wait (0 while the queue keeps up).
        wait = self.demand.queue_wait(queue, now) if running else 0.0
        rate = sum(arrivals.values()) / ARRIVAL_WINDOW_SECONDS
        behind = math.ceil(rate * wait) if wait >= FALLING_BEHIND_SECONDS else 0
        # New tasks, tasks no execution has seen, or a queue falling behind start tasks.
        wanted = pending or backlog_hint or known or behind or not seen
        backlog = max(pending, behind, backlog_hint, known) if wanted else 0
        decision = decide(policy, backlog, running)
        if replace > decision.start:
            # Worker tasks that stopped with work left (run budget, shutdown) are replaced
            # one for one, up to the cap: they may still count as running for a moment.
            start = min(replace, policy.task_cap)
            decision = replace_fields(decision, start=start, reason=f"replacing {start} tasks")
        elif not decision.start and not seen and not running:
            # Tasks came since any execution pulled, and none runs now (the last one was
            # idling out as they arrived): start one, or they wait for the safety net.
            decision = decide(policy, max(backlog, 1), 0)
            decision = replace_fields(
                decision, reason=f"uncovered demand since {demand_at:%H:%M:%S}"
            )
        # Demand stays recorded until an execution is seen to cover it (one created after
        # it, which the one started now will be). Only a decision that starts something
        # holds the lease for the cooldown; one that starts nothing and changes nothing
        # writes nothing (a queue's lease is one object: GCS takes about one write a second).
        keep_demand = None if seen else demand_at
        if decision.start:
            until = now + timedelta(seconds=self.settings.dispatch_cooldown_seconds)
        else:
            until = now
        unchanged = keep_demand == lease.demand_at and arrivals == lease.arrivals_with(0, now)
        if (decision.start or not unchanged) and not self.demand.write_lease(
            queue, lease, until, keep_demand, arrivals
        ):
            return None  # another dispatcher decided a moment before us
        with self._lock:
            self._pending[queue] -= pending
            if self._demand_at.get(queue) == local_demand:
                self._demand_at.pop(queue, None)
        if decision.start:
            self._start(policy, decision)
        return decision

    def _start(self, policy: QueuePolicy, decision: Decision) -> None:
        env = {"QUEUE": policy.queue, "WORKER_CONCURRENCY": str(decision.concurrency)}
        started = self.jobs.run(policy.job, decision.start, env)
        log.info(
            "started %d worker tasks for queue %s (%s)",
            decision.start,
            policy.queue,
            decision.reason,
            extra={
                "json_fields": {
                    "event": Event.EXECUTION_STARTED,
                    "queue": policy.queue,
                    "job": policy.job,
                    "execution": started.execution,
                    "tasks": decision.start,
                    "concurrency": decision.concurrency,
                    "backlog": decision.backlog,
                    "running": decision.running,
                }
            },
        )

    # --- tick: what came due, and every queue ----------------------------------------------

    def tick(self, now: datetime | None = None) -> TickReport:
        """Publish due delayed tasks, honour wake-ups, fire due periodic tasks, and dispatch
        each queue that has something to do."""
        now = now or self.clock()
        report = TickReport()
        woken: Counter[str] = Counter()
        replacements: Counter[str] = Counter()
        for item in self.schedule.due(now):
            if item.kind == TASK:
                if self._publish_due(item, now):
                    report.published.append(item.task_id)
                    woken[item.queue] += 1
                else:
                    report.dropped.append(item.task_id)
            elif item.replaces is not None:
                replacements[item.queue] += 1
            else:
                woken[item.queue] += 1
            self.schedule.remove(item.name)
        for task_type in self.registry:
            if task_type.schedule and (fired := self._fire_if_due(task_type, now)):
                report.fired.append(fired)
                woken[task_type.queue] += 1
        for queue, count in (woken + replacements).items():
            self.note_demand(queue, count, now)
        for queue in self.policies:
            replace = replacements.get(queue, 0)
            if replace or self._wants_dispatch(queue):
                decision = self.dispatch(queue, replace=replace)
                if decision is not None:
                    report.decisions.append(decision)
        return report

    def _wants_dispatch(self, queue: str) -> bool:
        """Something to decide: demand noted here, demand recorded and not yet covered, or a
        known backlog."""
        with self._lock:
            if self._pending.get(queue) or self._demand_at.get(queue):
                return True
        if self.demand.read_lease(queue).demand_at is not None:
            return True
        return (self._backlog(queue) or 0) > 0

    def _publish_due(self, item: ScheduledItem, now: datetime) -> bool:
        """Publish a delayed task that came due, unless it was cancelled (or ended) meanwhile.

        `scheduled` → `queued` is a conditional write, so a cancel either lands before it
        (the record is cancelled: dropped) or after it (a cancel of a queued task, which the
        worker honours). A crash after it leaves the item, and the next tick publishes it.
        """
        result = self.status.transition(item.task_id, lifecycle.came_due(now))
        if result.record is not None and result.record.state in ENDED:
            return False
        self.publisher.publish(
            self.settings.topic_path_for(item.queue), item.data, item.attributes or {}
        )
        return True

    # --- periodic tasks ------------------------------------------------------------------

    def _fire_if_due(self, task_type, now: datetime) -> str | None:
        blob = self.bucket.blob(f"{PERIODIC_PREFIX}{task_type.name}.json")
        try:
            state = json.loads(blob.download_as_bytes())
            generation = int(blob.generation)
            last = datetime.fromisoformat(state["last_fired"])
            if state.get("schedule") != [task_type.schedule, task_type.timezone]:
                last = None  # the schedule changed: start afresh from now
        except gexc.NotFound:
            state, generation, last = None, 0, None
        firing = due_firing(task_type, last, now) if last is not None else None
        mark = firing or latest_firing(task_type, now)
        if last is not None and firing is None:
            return None
        try:
            blob.upload_from_string(
                json.dumps(
                    {
                        "last_fired": mark.isoformat(),
                        "schedule": [task_type.schedule, task_type.timezone],
                    }
                ),
                content_type="application/json",
                if_generation_match=generation,
            )
        except gexc.PreconditionFailed:
            return None  # another dispatcher fired (or started) this schedule just now
        return self.fire(task_type.name, firing) if firing else None

    def fire(self, task_type: str, scheduled_at: datetime) -> str:
        """Run one firing of a periodic task type (its payload's defaults); its task id.

        Firing one scheduled time again (a retried Cloud Scheduler call) is the same task.
        """
        declared = self.registry.get(task_type)
        task_id = firing_task_id(task_type, scheduled_at)
        if self.status.read(task_id) is not None:
            return task_id  # fired already
        envelope, _ = build_envelope(self.registry, task_type, {}, task_id=task_id)
        message_id = self.publisher.publish_task(envelope)
        self.status.create(
            lifecycle.queued(
                Delivery(
                    task_id=task_id,
                    task_type=task_type,
                    message_id=message_id,
                    queue=declared.queue,
                    submitted_at=envelope.submitted_at,
                    payload=envelope.payload,
                ),
                self.clock(),
            )
        )
        log.info(
            "periodic task fired",
            extra={
                "json_fields": {
                    "event": Event.PERIODIC_FIRED,
                    "task_id": task_id,
                    "task_type": task_type,
                    "queue": declared.queue,
                    "message_id": message_id,
                    "scheduled_at": scheduled_at.isoformat(),
                }
            },
        )
        self.note_demand(declared.queue)
        return task_id

    def state_of(self, task_id: str) -> TaskState | None:
        stored = self.status.read(task_id)
        return stored.record.state if stored else None
