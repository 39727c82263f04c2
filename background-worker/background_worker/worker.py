"""One worker execution: pull with bounded concurrency until a stop condition, then drain.

Stop conditions, first one wins: the subscription stays empty for the idle window,
MAX_MESSAGES were received, the run-time budget is spent, a shutdown was requested
(SIGTERM), or Pub/Sub or storage stayed unreachable past INFRA_RETRY_SECONDS. In-flight work
then finishes with its leases kept; on shutdown, what cannot finish within the grace period
is stopped and returned so it is redelivered promptly.

Nothing is pulled while storage is known to be down: every message pulled and returned
counts as a Pub/Sub delivery, and an outage must not spend the attempts of tasks that
never ran.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

from google.api_core import exceptions as gexc

from background_worker.acks import Settler
from background_worker.isolation import Isolation
from background_worker.leases import ClaimKeeper, LeaseKeeper
from background_worker.memory import MemoryBudget
from background_worker.processing import InFlight, Outcome, TaskProcessor
from background_worker.storage_gate import StorageGate
from background_worker.wakeups import LagReporter, Wakeups
from taskcore import lifecycle
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client, storage_retry, subscriber_client
from taskcore.demand import DemandStore
from taskcore.errors import InfrastructureError
from taskcore.events import Event
from taskcore.journal import Journal, writer_name
from taskcore.publishing import Publisher
from taskcore.schedule import ScheduleStore
from taskcore.settings import Settings
from taskcore.status import StatusStore, utcnow
from taskcore.tasks import TaskRegistry, load_task_modules

log = logging.getLogger(__name__)

_PULL_RETRYABLE = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.Unknown,
    gexc.DeadlineExceeded,
    gexc.RetryError,
)


@dataclass
class ExecutionSummary:
    """What one execution did."""

    received: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: {o.value: 0 for o in Outcome})
    stop_reason: str = ""
    duration_seconds: float = 0.0
    abandoned: int = 0

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] += 1

    def as_fields(self) -> dict:
        """The summary as structured log fields."""
        return {
            "event": Event.EXECUTION_SUMMARY,
            "received": self.received,
            "processed": self.outcomes["succeeded"],
            "duplicates": self.outcomes["duplicate"],
            "failed": self.outcomes["retried"],
            "dead_lettered": self.outcomes["dead_lettered"],
            "cancelled": self.outcomes["cancelled"],
            "released": self.outcomes["released"] + self.outcomes["infrastructure"],
            "abandoned": self.abandoned,
            "stop_reason": self.stop_reason,
            "duration_seconds": round(self.duration_seconds, 3),
        }


# Stopping for these with the queue maybe not empty, a worker task asks for a replacement.
REPLACED_ON = ("run_budget", "shutdown")


class Worker:
    """Drains one subscription; build it once per execution, then call run()."""

    def __init__(
        self,
        settings: Settings,
        *,
        task_types: TaskRegistry | None = None,
        shutdown: threading.Event | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.settings = settings
        self.shutdown = shutdown or threading.Event()
        self.subscriber = subscriber_client(settings)
        self.storage = storage_client(settings, pool_size=settings.worker_concurrency + 8)
        self.bucket = make_bucket(settings, self.storage)
        self.publisher = publisher or Publisher(settings)
        self.retry = storage_retry(settings)
        # Every record this execution writes is journaled for the dashboard (taskcore.journal).
        self.journal = Journal(self.bucket, writer_name("worker", settings.cloud_run_execution))
        self.journal.start()
        self.status = StatusStore(self.bucket, retry=self.retry, on_written=self.journal.written)
        self.demand = DemandStore(self.bucket, retry=self.retry)
        self._last_pull_started: datetime | None = None
        self.wakeups = self.lag = None
        if settings.dispatch_enabled:
            self.wakeups = Wakeups(ScheduleStore(self.bucket, retry=self.retry), settings.queue)
            self.lag = LagReporter(self.demand, settings.queue, self._worker_task_name())
        self.settler = Settler(
            self.subscriber,
            settings.subscription_path,
            on_return=self.wakeups.returned if self.wakeups else None,
        )
        self.leases = LeaseKeeper(self.settler, settings.ack_deadline_seconds)
        self.claims = ClaimKeeper(self.status, settings.claim_seconds)
        self.gate = StorageGate(self.bucket, settings.infra_retry_seconds, self.shutdown)
        self.memory = MemoryBudget.for_settings(settings.worker_memory_mb)
        self.isolation = Isolation(settings.task_modules)
        self.processor = TaskProcessor(
            settings,
            task_types if task_types is not None else load_task_modules(settings.task_modules),
            self.bucket,
            self.publisher,
            self.settler,
            self.leases,
            self.claims,
            self.status,
            self.retry,
            self.shutdown,
            self.memory,
            self.isolation,
        )

    def run(self) -> ExecutionSummary:
        """Drain the subscription until a stop condition; return the summary."""
        settings = self.settings
        summary = ExecutionSummary()
        started = time.monotonic()
        in_flight: dict[Future, InFlight] = {}
        pool = ThreadPoolExecutor(settings.worker_concurrency, thread_name_prefix="task")
        self.leases.start()
        self.claims.start()
        last_activity = time.monotonic()
        failure: str | None = None
        try:
            # Storage first: with it down, every message pulled would be pulled in vain.
            if not self.gate.wait_until_up():
                failure = "storage unreachable"
            while failure is None:
                summary.stop_reason = self._stop_reason(summary, started, in_flight, last_activity)
                if summary.stop_reason:
                    break
                if summary.outcomes[Outcome.INFRASTRUCTURE.value] and not self.gate.wait_until_up():
                    failure = "storage unreachable"
                    break
                # Threads free, and memory for as many tasks as a task reserves by default.
                free = min(
                    settings.worker_concurrency - len(in_flight),
                    self.memory.slots(settings.task_memory_mb),
                )
                if free <= 0 and not in_flight:
                    free = 1  # a budget smaller than one task: still run them one at a time
                if free <= 0:
                    done, _ = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                    last_activity = self._collect(done, in_flight, summary) or last_activity
                    continue
                wanted = min(free, settings.pull_batch_size)
                if settings.max_messages:
                    wanted = min(wanted, settings.max_messages - summary.received)
                try:
                    messages = self._pull(wanted)
                except InfrastructureError as exc:
                    failure = str(exc)
                    break
                now = time.monotonic()
                if messages:
                    last_activity = now
                    if self.lag is not None:
                        self.lag.pulled(messages)
                for received in messages:
                    item = InFlight(received)
                    # Leased from the moment it is received; the run narrows it to the task's
                    # own time limit once it knows the task type.
                    self.leases.hold(received.ack_id, now + settings.task_timeout_seconds)
                    in_flight[pool.submit(self.processor.process, item)] = item
                summary.received += len(messages)
                done = [f for f in in_flight if f.done()]
                last_activity = self._collect(done, in_flight, summary) or last_activity
                if not messages and in_flight:
                    done, _ = wait(in_flight, timeout=0.2, return_when=FIRST_COMPLETED)
                    last_activity = self._collect(done, in_flight, summary) or last_activity
            if failure is not None:
                summary.stop_reason = "infrastructure"
            elif summary.stop_reason == "idle" and self._last_pull_started is not None:
                # Tells the dispatcher that what was queued before this pull has been taken.
                self.demand.mark_drained(self.settings.queue, self._last_pull_started)
                if summary.received and self.wakeups is not None:
                    self.wakeups.recheck(settings.ack_deadline_seconds)
            elif summary.stop_reason in REPLACED_ON and self.wakeups is not None:
                self.wakeups.replace_me(self._worker_task_name())
            # Leases and claims keep running while in-flight work finishes, whatever stopped us.
            self._finish(in_flight, summary)
        finally:
            self.claims.stop()
            self.leases.stop()
            pool.shutdown(wait=summary.abandoned == 0, cancel_futures=True)
            summary.duration_seconds = time.monotonic() - started
        if failure is None and summary.outcomes[Outcome.INFRASTRUCTURE.value]:
            failure = "storage unreachable"
        if failure is not None:
            raise InfrastructureError(
                f"{failure} for over {settings.infra_retry_seconds:g}s; "
                f"{summary.outcomes[Outcome.INFRASTRUCTURE.value]} messages returned to the queue"
            )
        return summary

    def _worker_task_name(self) -> str:
        return (
            f"{self.settings.cloud_run_execution or 'local'}-{self.settings.cloud_run_task_index}"
        )

    def _stop_reason(self, summary, started, in_flight, last_activity) -> str:
        if self.shutdown.is_set():
            return "shutdown"
        budget = self.settings.run_budget_seconds
        if budget and time.monotonic() - started >= budget:
            return "run_budget"
        if self.settings.max_messages and summary.received >= self.settings.max_messages:
            return "max_messages"
        if not in_flight and time.monotonic() - last_activity >= self.settings.idle_timeout_seconds:
            return "idle"
        return ""

    def _collect(self, done, in_flight, summary) -> float | None:
        if not done:
            return None
        for future in done:
            in_flight.pop(future)
            summary.count(future.result())
        return time.monotonic()

    def _pull(self, wanted: int) -> list:
        """Pull up to `wanted` messages; InfrastructureError once Pub/Sub stays unreachable."""
        deadline = time.monotonic() + self.settings.infra_retry_seconds
        delay = 0.2
        while not self.shutdown.is_set():
            self._last_pull_started = utcnow()
            try:
                response = self.subscriber.pull(
                    request={
                        "subscription": self.settings.subscription_path,
                        "max_messages": wanted,
                    },
                    # Short: the emulator (and Pub/Sub) hold an empty pull open until the
                    # deadline, and idleness is only noticed between pulls.
                    timeout=min(1.0, max(0.2, self.settings.idle_timeout_seconds / 2)),
                    retry=None,
                )
                return list(response.received_messages)
            except gexc.DeadlineExceeded:
                return []  # an empty long poll
            except gexc.NotFound as exc:
                raise InfrastructureError(f"subscription vanished: {exc}") from exc
            except _PULL_RETRYABLE as exc:
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"Pub/Sub pull keeps failing: {exc}") from exc
                log.warning("pull failed, retrying in %.1fs: %s", delay, exc)
                self.shutdown.wait(delay)
                delay = min(delay * 2, 5.0)
        return []

    def _finish(self, in_flight: dict[Future, InFlight], summary: ExecutionSummary) -> None:
        """Let in-flight work finish; on shutdown, stop and return what misses the grace period."""
        grace_end = None
        while in_flight:
            now = time.monotonic()
            if grace_end is None and self.shutdown.is_set():
                grace_end = now + self.settings.shutdown_grace_seconds
            if grace_end is not None and now >= grace_end:
                break
            timeout = 0.5 if grace_end is None else min(0.5, grace_end - now)
            done, _ = wait(in_flight, timeout=max(0.0, timeout), return_when=FIRST_COMPLETED)
            self._collect(done, in_flight, summary)
        if not in_flight:
            return
        # Ask every run to stop; most return their message themselves within a moment.
        for item in in_flight.values():
            item.stop()
        done, _ = wait(in_flight, timeout=1.0)
        self._collect(done, in_flight, summary)
        if not in_flight:
            return
        returned = self.settler.nack(item.received.ack_id for item in in_flight.values())
        for item in in_flight.values():
            if item.run is not None and item.run.claim.claimed:
                self._release(item)
        summary.abandoned = len(in_flight)
        log.warning(
            "shutdown: %d tasks unfinished after the grace period; %d returned",
            len(in_flight),
            returned,
        )

    def _release(self, item: InFlight) -> None:
        run = item.run
        try:
            self.status.transition(
                run.claim.delivery.task_id, lifecycle.release(run.run_id, utcnow())
            )
        except Exception as exc:  # the claim then runs out by itself
            log.warning("claim of an abandoned run not released: %s", exc)

    def close(self) -> None:
        """Send queued acks, then release the clients."""
        self.settler.close()
        self.journal.close()
        self.publisher.close()
        self.subscriber.close()


def drain_subscription(settings: Settings, **kwargs) -> ExecutionSummary:
    """Run one execution against settings' subscription and return its summary."""
    worker = Worker(settings, **kwargs)
    try:
        return worker.run()
    finally:
        worker.close()
