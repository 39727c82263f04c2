"""How many parallel worker tasks a queue should run for its backlog (KEDA ScaledJob-like).

Pub/Sub does not tell its backlog in time (its metric lags minutes), so the dispatcher
estimates it: the tasks accepted since its last decision, or, once busy workers report that
messages wait (taskcore.demand), the arrival rate of the last minute times that wait.
A queue wants about backlog ÷ backlog_per_task tasks, at most max_tasks; max_concurrency (parallel tasks ×
worker concurrency, like Cloud Tasks' maxConcurrentDispatches) caps both how many tasks run
and how many messages each works on at once, to protect what the tasks call downstream. It
starts only what is missing beside the tasks already running.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from taskcore.settings import DEFAULT_QUEUE, Settings


@dataclass(frozen=True)
class QueuePolicy:
    """A queue's job and its limits."""

    queue: str
    job: str
    max_tasks: int = 10
    backlog_per_task: int = 100
    max_concurrency: int = 0  # 0: no cap beyond max_tasks × worker_concurrency
    worker_concurrency: int = 64

    @property
    def task_cap(self) -> int:
        """Parallel tasks allowed: max_tasks, fewer when max_concurrency says so."""
        if not self.max_concurrency:
            return self.max_tasks
        return max(1, min(self.max_tasks, self.max_concurrency // self.worker_concurrency or 1))


@dataclass(frozen=True)
class Decision:
    """What to start now for a queue: `start` tasks, each working on `concurrency` at once."""

    queue: str
    start: int
    concurrency: int
    desired: int
    running: int
    backlog: int
    reason: str


def decide(policy: QueuePolicy, backlog: int, running: int) -> Decision:
    """The tasks to start for this backlog, beside `running` tasks already running."""
    cap = policy.task_cap
    desired = 0 if backlog <= 0 else min(cap, math.ceil(backlog / policy.backlog_per_task))
    start = max(0, desired - running)
    total = max(1, running + start)
    concurrency = policy.worker_concurrency
    if policy.max_concurrency:
        concurrency = max(1, min(concurrency, policy.max_concurrency // total))
    if backlog <= 0:
        reason = "no backlog"
    elif start == 0:
        reason = f"{running} running cover a backlog of {backlog}"
    else:
        reason = f"backlog {backlog} wants {desired} tasks; {running} running"
    return Decision(policy.queue, start, concurrency, desired, running, backlog, reason)


def queue_policies(settings: Settings, queues: list[str]) -> dict[str, QueuePolicy]:
    """Each queue's policy: QUEUES (JSON) where it says, defaults elsewhere."""
    table = json.loads(settings.queues or "{}")
    policies = {}
    for queue in sorted({DEFAULT_QUEUE, *queues, *table}):
        given = table.get(queue, {})
        default_job = settings.worker_job_name
        job = given.get("job") or (
            default_job if queue == DEFAULT_QUEUE else f"{default_job}-{queue}"
        )
        policies[queue] = QueuePolicy(
            queue=queue,
            job=job,
            max_tasks=int(given.get("max_tasks", 10)),
            backlog_per_task=max(1, int(given.get("backlog_per_task", 100))),
            max_concurrency=int(given.get("max_concurrency", 0)),
            worker_concurrency=int(given.get("worker_concurrency", settings.worker_concurrency)),
        )
    return policies
