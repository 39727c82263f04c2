"""One worker execution: pull with bounded concurrency until a stop condition, then drain.

Stop conditions, first one wins: the subscription stays empty for the idle window,
MAX_MESSAGES were received, the run-time budget is spent, or a shutdown was requested
(SIGTERM). In-flight work then finishes; on shutdown, what cannot finish within the
grace period is nacked so it is redelivered promptly.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.api_core import retry as api_retry

from background_worker.acks import Settler
from background_worker.deferred import Deferred
from background_worker.leases import LeaseKeeper
from background_worker.processing import InFlight, Outcome, TaskProcessor
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client, subscriber_client
from taskcore.errors import InfrastructureError
from taskcore.events import Event
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.tasks import TaskRegistry, load_task_modules

log = logging.getLogger(__name__)

_PULL_RETRYABLE = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.Unknown,
    gexc.DeadlineExceeded,
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
            "abandoned": self.abandoned,
            "stop_reason": self.stop_reason,
            "duration_seconds": round(self.duration_seconds, 3),
        }


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
        self.shutdown_grace_seconds = settings.shutdown_grace_seconds
        self.subscriber = subscriber_client(settings)
        self.storage = storage_client(settings, pool_size=settings.worker_concurrency + 8)
        self.publisher = publisher or Publisher(settings)
        self.settler = Settler(self.subscriber, settings.subscription_path)
        subscription = self._get_subscription()
        ack_deadline = subscription.ack_deadline_seconds or settings.ack_deadline_seconds
        max_attempts = (
            subscription.dead_letter_policy.max_delivery_attempts or settings.max_delivery_attempts
        )
        self.leases = LeaseKeeper(self.settler, ack_deadline)
        self.deferred = Deferred()
        self.processor = TaskProcessor(
            settings,
            task_types if task_types is not None else load_task_modules(settings.task_modules),
            make_bucket(settings, self.storage),
            self.publisher,
            self.settler,
            self.leases,
            max_attempts,
            self.deferred,
        )

    def _get_subscription(self):
        try:
            return self.subscriber.get_subscription(
                request={"subscription": self.settings.subscription_path},
                retry=api_retry.Retry(
                    initial=0.25,
                    maximum=4.0,
                    timeout=self.settings.infra_retry_seconds,
                    predicate=api_retry.if_exception_type(*_PULL_RETRYABLE),
                ),
                timeout=min(30.0, self.settings.infra_retry_seconds),
            )
        except gexc.NotFound:
            raise InfrastructureError(
                f"subscription {self.settings.subscription_path} does not exist"
            ) from None
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise InfrastructureError(f"Pub/Sub unreachable: {exc}") from exc

    def run(self) -> ExecutionSummary:
        """Drain the subscription until a stop condition; return the summary."""
        settings = self.settings
        summary = ExecutionSummary()
        started = time.monotonic()
        in_flight: dict[Future, InFlight] = {}
        pool = ThreadPoolExecutor(settings.worker_concurrency, thread_name_prefix="task")
        self.leases.start()
        last_activity = time.monotonic()
        try:
            while True:
                summary.stop_reason = self._stop_reason(summary, started, in_flight, last_activity)
                if summary.stop_reason:
                    break
                free = settings.worker_concurrency - len(in_flight)
                if free <= 0:
                    done, _ = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                    last_activity = self._collect(done, in_flight, summary) or last_activity
                    continue
                wanted = min(free, settings.pull_batch_size)
                if settings.max_messages:
                    wanted = min(wanted, settings.max_messages - summary.received)
                messages = self._pull(wanted)
                now = time.monotonic()
                if messages:
                    last_activity = now
                for received in messages:
                    item = InFlight(received)
                    # Leased from the moment it is received; the processor narrows it to the
                    # task's own time limit once it knows the task type.
                    self.leases.hold(received.ack_id, now + settings.task_timeout_seconds)
                    in_flight[pool.submit(self.processor.process, item)] = item
                summary.received += len(messages)
                done = [f for f in in_flight if f.done()]
                last_activity = self._collect(done, in_flight, summary) or last_activity
                if not messages and in_flight:
                    done, _ = wait(in_flight, timeout=0.2, return_when=FIRST_COMPLETED)
                    last_activity = self._collect(done, in_flight, summary) or last_activity
            self._finish(in_flight, summary)
        finally:
            self.leases.stop()
            pool.shutdown(wait=summary.abandoned == 0, cancel_futures=True)
            summary.duration_seconds = time.monotonic() - started
        if summary.outcomes[Outcome.INFRASTRUCTURE.value]:
            raise InfrastructureError(
                f"Cloud Storage stayed unreachable for over {settings.infra_retry_seconds:g}s; "
                f"{summary.outcomes[Outcome.INFRASTRUCTURE.value]} messages returned to the queue"
            )
        return summary

    def _stop_reason(self, summary, started, in_flight, last_activity) -> str:
        if self.shutdown.is_set():
            return "shutdown"
        if summary.outcomes[Outcome.INFRASTRUCTURE.value]:
            return "infrastructure"
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
        deadline = time.monotonic() + self.settings.infra_retry_seconds
        delay = 0.2
        while True:
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
            except _PULL_RETRYABLE as exc:
                if time.monotonic() > deadline or self.shutdown.is_set():
                    raise InfrastructureError(f"Pub/Sub pull keeps failing: {exc}") from exc
                log.warning("pull failed, retrying in %.1fs: %s", delay, exc)
                self.shutdown.wait(delay)
                delay = min(delay * 2, 5.0)
            except gexc.NotFound as exc:
                raise InfrastructureError(f"subscription vanished: {exc}") from exc

    def _finish(self, in_flight: dict[Future, InFlight], summary: ExecutionSummary) -> None:
        """Let in-flight work finish; on shutdown, nack what misses the grace period."""
        if not in_flight:
            return
        grace = self.shutdown_grace_seconds if self.shutdown.is_set() else None
        deadline = None if grace is None else time.monotonic() + grace
        while in_flight:
            if self.shutdown.is_set() and deadline is None:
                deadline = time.monotonic() + self.shutdown_grace_seconds
            timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            self._collect(done, in_flight, summary)
            if deadline is not None and time.monotonic() >= deadline:
                break
        if in_flight:
            for item in in_flight.values():
                if item.context is not None:
                    item.context.cancelled.set()
            returned = self.settler.nack(item.received.ack_id for item in in_flight.values())
            summary.abandoned = len(in_flight)
            log.warning(
                "shutdown: %d tasks unfinished after the grace period; %d nacked",
                len(in_flight),
                returned,
            )

    def close(self) -> None:
        """Send queued acks, then release the clients."""
        self.deferred.stop()
        self.settler.close()
        self.publisher.close()
        self.subscriber.close()


def drain_subscription(settings: Settings, **kwargs) -> ExecutionSummary:
    """Run one execution against settings' subscription and return its summary."""
    worker = Worker(settings, **kwargs)
    try:
        return worker.run()
    finally:
        worker.close()
