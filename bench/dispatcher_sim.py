"""The dispatcher's decisions in simulation: the real `Dispatcher` on a fake clock.

Everything the dispatcher reads and writes is real code on an in-memory bucket (leases,
arrivals, drained marks, wake-ups); only Cloud Run and Pub/Sub are modelled:

- an execution's tasks start TASK_START_SECONDS after `jobs.run` (Cloud Run job cold start),
  then each drains PER_TASK_RATE messages/s while the queue has any;
- a task exits once the queue has been empty for IDLE_TIMEOUT_SECONDS (it then leaves the
  drained mark, as background_worker does), or at RUN_BUDGET_SECONDS (it then asks for a
  replacement, as background_worker does);
- the API pokes on every second with arrivals (DispatchTrigger: at most one decision per
  cooldown), Cloud Scheduler ticks every TICK_SECONDS.

Run: python bench/dispatcher_sim.py [--scenario burst|trickle|diurnal] (all by default).
Deterministic: the same figures every run.
"""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.jobs import ExecutionView, Started  # noqa: E402
from dispatcher.service import Dispatcher  # noqa: E402
from taskcore.demand import LAG_REPORT_SECONDS, DemandStore  # noqa: E402
from taskcore.memory_bucket import MemoryBucket  # noqa: E402
from taskcore.schedule import ScheduleStore  # noqa: E402
from taskcore.settings import Settings  # noqa: E402
from taskcore.tasks import load_task_modules  # noqa: E402

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
TASK_START_SECONDS = 10.0
PER_TASK_RATE = 50.0  # messages/s one worker task drains (64 threads, small tasks)
IDLE_TIMEOUT_SECONDS = 3.0
RUN_BUDGET_SECONDS = 540.0
TICK_SECONDS = 60
# Cloud Run bills a job task's vCPU and memory for its whole life, rounded up to 100 ms;
# 1 vCPU and 1 GiB per task, Tier 1 prices (docs/capacity.md).
VCPU_SECOND = 0.000018
GIB_SECOND = 0.000002


@dataclass
class SimTask:
    execution: str
    starts_at: float
    started: bool = False
    empty_since: float | None = None
    ended_at: float | None = None
    last_report: float = float("-inf")


@dataclass
class SimExecution:
    name: str
    created: datetime
    tasks: list[SimTask] = field(default_factory=list)


class SimJobs:
    """Cloud Run jobs as the dispatcher sees them, driven by the simulation's clock."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.executions_started: list[SimExecution] = []

    def run(self, job: str, task_count: int, env: dict) -> Started:
        name = f"{job}-{len(self.executions_started):05d}"
        execution = SimExecution(name, self.sim.clock())
        starts = self.sim.now + TASK_START_SECONDS
        execution.tasks = [SimTask(name, starts) for _ in range(task_count)]
        self.executions_started.append(execution)
        return Started(name, task_count)

    def executions(self, job: str) -> list[ExecutionView]:
        return [
            ExecutionView(e.name, e.created, sum(t.ended_at is None for t in e.tasks))
            for e in reversed(self.executions_started[-50:])
        ]

    def close(self) -> None:
        pass


class Simulation:
    def __init__(
        self,
        arrivals,
        duration: int,
        *,
        max_tasks: int = 10,
        cron_minutes: int | None = None,
        tick_seconds: int = TICK_SECONDS,
    ) -> None:
        self.arrivals = arrivals  # second -> tasks arriving in it
        self.duration = duration
        self.tick_seconds = tick_seconds
        # cron_minutes: no dispatcher, a scheduled execution of max_tasks tasks every so often
        # (the first release, and the recipe's Cloud Scheduler trigger).
        self.cron_minutes = cron_minutes
        self.max_tasks = max_tasks
        self.now = 0.0
        self.bucket = MemoryBucket()
        self.jobs = SimJobs(self)
        settings = Settings.from_env(
            {},
            bucket_name=self.bucket.name,
            queues=json.dumps({"default": {"max_tasks": max_tasks}}),
        )
        self.settings = settings
        self.dispatcher = Dispatcher(
            settings,
            load_task_modules(settings.task_modules),
            self.bucket,
            publisher=None,
            jobs=self.jobs,
            clock=self.clock,
        )
        self.demand = DemandStore(self.bucket)
        self.schedule = ScheduleStore(self.bucket)
        self.queue: deque[list] = deque()  # [arrival second, count] FIFO
        self.waits: list[tuple[float, int]] = []  # (seconds waited, tasks)
        self.last_poke = -1e9
        self.peak_parallel = 0
        self.task_seconds = 0.0
        self.idle_task_seconds = 0.0
        self.drained_at: float | None = None
        self.submitted = 0

    def clock(self) -> datetime:
        return T0 + timedelta(seconds=self.now)

    @property
    def backlog(self) -> int:
        return sum(count for _, count in self.queue)

    def _take(self, budget: float) -> int:
        self.oldest_taken = None
        taken = 0
        budget = int(budget)
        while budget > 0 and self.queue:
            arrived, count = self.queue[0]
            take = min(count, budget)
            self.waits.append((self.now - arrived, take))
            if self.oldest_taken is None:
                self.oldest_taken = arrived
            taken += take
            budget -= take
            if take == count:
                self.queue.popleft()
            else:
                self.queue[0][1] -= take
        return taken

    def step(self) -> None:
        second = int(self.now)
        arriving = self.arrivals(second)
        if arriving:
            self.queue.append([self.now, arriving])
            self.submitted += arriving
            if self.cron_minutes is None:
                self.dispatcher.note_demand("default", arriving)
                if self.now - self.last_poke >= self.settings.dispatch_cooldown_seconds:
                    self.last_poke = self.now
                    self.dispatcher.dispatch("default")
        if self.cron_minutes is None and second % self.tick_seconds == 0:
            self.dispatcher.tick()
        if self.cron_minutes is not None and second % (self.cron_minutes * 60) == 0:
            self.jobs.run("task-worker", self.max_tasks, {})
        running = [
            t
            for e in self.jobs.executions_started
            for t in e.tasks
            if t.ended_at is None and t.starts_at <= self.now
        ]
        self.peak_parallel = max(self.peak_parallel, len(running))
        idle_before = self.backlog == 0
        for task in running:
            self.task_seconds += 1
            if idle_before:
                self.idle_task_seconds += 1
            took = self._take(PER_TASK_RATE)
            if took:
                task.empty_since = None
                if self.now - task.last_report >= LAG_REPORT_SECONDS:
                    # As background_worker does: the wait of the oldest message just pulled.
                    task.last_report = self.now
                    self.demand.report_lag(
                        "default",
                        f"{task.execution}-{id(task)}",
                        self.clock(),
                        self.now - self.oldest_taken,
                    )
            elif task.empty_since is None:
                task.empty_since = self.now
            if task.empty_since is not None and self.now - task.empty_since >= IDLE_TIMEOUT_SECONDS:
                task.ended_at = self.now
                self.demand.mark_drained("default", self.clock() - timedelta(seconds=1))
            elif self.now - task.starts_at >= RUN_BUDGET_SECONDS:
                task.ended_at = self.now
                self.schedule.add_wakeup(
                    self.clock(), "default", replaces=f"{task.execution}-{id(task)}"
                )
        if self.submitted and self.backlog == 0 and self.drained_at is None:
            self.drained_at = self.now
        elif self.backlog:
            self.drained_at = None
        self.now += 1

    def run(self) -> dict:
        while self.now < self.duration:
            self.step()
        weighted = _weighted_percentiles(self.waits)
        executions = self.jobs.executions_started
        tasks = sum(len(e.tasks) for e in executions)
        cost = self.task_seconds * (VCPU_SECOND + GIB_SECOND)
        return {
            "submitted": self.submitted,
            "left_in_queue": self.backlog,
            "executions_started": len(executions),
            "tasks_started": tasks,
            "peak_parallel_tasks": self.peak_parallel,
            "drained_at_s": self.drained_at,
            "wait_p50_s": weighted[0],
            "wait_p99_s": weighted[1],
            "task_seconds": round(self.task_seconds),
            "idle_task_seconds": round(self.idle_task_seconds),
            "run_cost_usd": round(cost, 2),
            "idle_cost_usd": round(self.idle_task_seconds * (VCPU_SECOND + GIB_SECOND), 4),
        }


def _weighted_percentiles(waits: list[tuple[float, int]]) -> tuple[float, float]:
    if not waits:
        return (0.0, 0.0)
    ordered = sorted(waits)
    total = sum(n for _, n in ordered)
    marks, seen, out = [0.5 * total, 0.99 * total], 0, []
    for wait, n in ordered:
        seen += n
        while marks and seen >= marks[0]:
            out.append(wait)
            marks.pop(0)
    return (out[0], out[1])


def burst(second: int) -> int:
    """1,000,000 tasks submitted over the first 100 s (10,000/s)."""
    return 10_000 if second < 100 else 0


def trickle(second: int) -> int:
    """One task a minute."""
    return 1 if second % 60 == 30 else 0


LOW_RATE, PEAK_RATE = 0.5, 200.0


def diurnal(second: int) -> int:
    """A day: 0.5 tasks/s at 02:00 rising to 200 tasks/s at 14:00 (sinusoidal, 8.7M a day):
    the peak needs four tasks at PER_TASK_RATE."""
    # Whole tasks, deterministically: the integral of the rate, floored.
    return int(_cumulative(second + 1)) - int(_cumulative(second))


def _cumulative(second: int) -> float:
    # Closed-form integral of the rate, from 0 to `second`.
    mean = (LOW_RATE + PEAK_RATE) / 2
    amplitude = (PEAK_RATE - LOW_RATE) / 2
    omega = 2 * math.pi / (24 * 3600)
    return mean * second + amplitude / omega * (
        math.sin(omega * (second - 14 * 3600)) - math.sin(omega * (-14 * 3600))
    )


POLICIES = {
    "dispatcher (max_tasks 10)": {"max_tasks": 10},
    "dispatcher (max_tasks 100)": {"max_tasks": 100},
    "cron every 5 min, 1 task (first release)": {"max_tasks": 1, "cron_minutes": 5},
    "cron every 5 min, 10 tasks": {"max_tasks": 10, "cron_minutes": 5},
}

SCENARIOS = {
    "burst": (burst, 3 * 3600),
    "trickle": (trickle, 24 * 3600),
    "diurnal": (diurnal, 24 * 3600),
}


COLUMNS = [
    ("executions_started", "executions"),
    ("tasks_started", "tasks started"),
    ("peak_parallel_tasks", "peak parallel"),
    ("drained_at_s", "drained at (s)"),
    ("wait_p50_s", "wait p50 (s)"),
    ("wait_p99_s", "wait p99 (s)"),
    ("task_seconds", "task-seconds"),
    ("idle_task_seconds", "idle task-seconds"),
    ("run_cost_usd", "Cloud Run cost (USD)"),
]


def markdown_table(results: dict) -> str:
    lines = [
        "| scenario / policy | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, result in results.items():
        cells = [str(result[key]) if result[key] is not None else "—" for key, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@click.command()
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), multiple=True)
@click.option("--json-out", type=click.Path(), default=None)
def main(scenario, json_out) -> None:
    results = {}
    for name in scenario or SCENARIOS:
        arrivals, duration = SCENARIOS[name]
        for policy, options in POLICIES.items():
            result = Simulation(arrivals, duration, **options).run()
            results[f"{name} / {policy}"] = result
            click.echo(f"{name} / {policy}: {json.dumps(result)}")
    click.echo(markdown_table(results))
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
