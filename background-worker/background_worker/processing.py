"""One received message to exactly one outcome: parse it, judge it against its task's record,
run it (or not), record what came of it, and settle the message.

Outcomes and what they do to the message:
- succeeded: the run's outputs, then the `succeeded` record, then the ack;
- duplicate: the task ended already (or another run's result stands): acked, not run;
- dead_lettered: a permanent failure, or the task's last attempt: the dead letter with its
  reason, then the ack; if that publish fails the message comes back, never dropped;
- retried: a failure that may pass: it comes back after a backoff the worker applies;
- cancelled: the task was cancelled: acked;
- released: back to the queue without counting against the task (shutdown, another run
  holds the task, or its Pub/Sub deliveries were running out and it was re-published);
- infrastructure: storage stayed unreachable past retries: returned, and the execution stops.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from google.cloud import storage
from google.pubsub_v1.types import ReceivedMessage

from background_worker.acks import Settler
from background_worker.isolation import Isolation
from background_worker.leases import ClaimKeeper, LeaseKeeper
from background_worker.memory import MemoryBudget
from background_worker.results import Message, Outcome, Recorder
from background_worker.runs import Run
from taskcore import lifecycle
from taskcore.context import SHUTDOWN
from taskcore.deadletter import REFRESHED_FROM, UNSETTLED_DELIVERIES, dead_letter
from taskcore.envelope import TASK_ID_PATTERN, parse_message, peek_task_fields
from taskcore.errors import InvalidTaskError, PublishError
from taskcore.events import Event
from taskcore.failures import describe, is_infrastructure_error
from taskcore.lifecycle import Delivery, Verdict
from taskcore.logs import task_context
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import DeadLetterInfo, ErrorInfo, StatusStore, TaskState, TaskStatus, utcnow
from taskcore.tasks import TaskRegistry

log = logging.getLogger(__name__)

# A lease outlives the task's time limit by this much, so a task that overruns and is
# stopped still has time to be settled before Pub/Sub redelivers it.
LEASE_MARGIN_SECONDS = 30.0
# While another run holds a task, look at its record this often.
WAIT_POLL_SECONDS = 2.0

# The log event of each outcome (taskcore.events defines them; alerts filter on them).
OUTCOME_EVENTS = {
    Outcome.SUCCEEDED: Event.TASK_SUCCEEDED,
    Outcome.DUPLICATE: Event.TASK_DUPLICATE,
    Outcome.DEAD_LETTERED: Event.TASK_DEAD_LETTERED,
    Outcome.RETRIED: Event.TASK_RETRIED,
    Outcome.CANCELLED: Event.TASK_CANCELLED,
    Outcome.RELEASED: Event.TASK_RELEASED,
    Outcome.INFRASTRUCTURE: Event.TASK_RELEASED,
}


class InFlight:
    """A message being processed, and its run once one started."""

    def __init__(self, received: ReceivedMessage) -> None:
        self.received = received
        self.run: Run | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.attempt: int | None = None

    def stop(self, reason: str = SHUTDOWN) -> None:
        if self.run is not None:
            self.run.stop(reason)


class TaskProcessor:
    """Runs each received message to exactly one outcome."""

    def __init__(
        self,
        settings: Settings,
        task_types: TaskRegistry,
        bucket: storage.Bucket,
        publisher: Publisher,
        settler: Settler,
        leases: LeaseKeeper,
        claims: ClaimKeeper,
        status: StatusStore,
        storage_retry,
        shutdown: threading.Event,
        memory: MemoryBudget,
        isolation: Isolation,
    ) -> None:
        self.settings = settings
        self.task_types = task_types
        self.bucket = bucket
        self.publisher = publisher
        self.settler = settler
        self.leases = leases
        self.claims = claims
        self.status = status
        self.storage_retry = storage_retry
        self.shutdown = shutdown
        self.memory = memory
        self.isolation = isolation
        self.execution = settings.cloud_run_execution or "local"
        self.recorder = Recorder(
            settings,
            bucket,
            status,
            publisher,
            settler,
            self.execution,
            storage_retry,
            self._wait_for_claim,
        )

    def process(self, item: InFlight) -> Outcome:
        """Process one message to its outcome; never raises for anything the task did."""
        received = item.received
        message = received.message
        attributes = dict(message.attributes)
        fields = peek_task_fields(message.data, attributes)
        settle = Message(
            received.ack_id,
            message.message_id,
            message.data,
            attributes,
            received.delivery_attempt or None,
        )
        with task_context(
            **fields, delivery_attempt=settle.delivery_attempt, message_id=message.message_id
        ):
            started = time.monotonic()
            try:
                outcome = self._process(item, settle)
            except Exception as exc:
                outcome = self._unexpected(item, settle, exc)
            finally:
                self.leases.release(received.ack_id)
            self._log_outcome(item, outcome, started)
            return outcome

    def _log_outcome(self, item: InFlight, outcome: Outcome, started: float) -> None:
        # One line per message outcome: the log-based metrics count these events.
        fields = {
            "event": OUTCOME_EVENTS[outcome],
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "error_type": item.error_type,
            "attempt": item.attempt,
        }
        failed = outcome in (Outcome.RETRIED, Outcome.DEAD_LETTERED)
        log.log(
            logging.WARNING if failed else logging.INFO,
            "task %s%s",
            outcome.value,
            f": {item.error_message}" if item.error_message else "",
            extra={"json_fields": fields},
        )

    def _unexpected(self, item: InFlight, message: Message, exc: Exception) -> Outcome:
        """Storage down past retries, or a bug here: the message goes back, never lost."""
        if is_infrastructure_error(exc):
            log.error("storage unreachable; message returned to the queue: %s", exc)
            self.settler.nack([message.ack_id])
            return Outcome.INFRASTRUCTURE
        item.error_type, item.error_message = "worker_error", describe(exc)
        log.exception("unexpected error processing message")
        attempt = message.delivery_attempt or 0
        if attempt >= self.settings.max_delivery_attempts:
            # It keeps failing here, not in a handler: dead-letter it with the reason rather
            # than let it cycle.
            return self._dead_letter_unrecorded(message, "worker_error", item.error_message)
        self.settler.delay(message.ack_id, self.recorder.backoff(attempt))
        return Outcome.RETRIED

    # --- the flow ------------------------------------------------------------------------------

    def _process(self, item: InFlight, message: Message) -> Outcome:
        received = item.received
        try:
            envelope, payload = parse_message(
                self.task_types,
                message.data,
                message.attributes,
                self.settings.max_task_bytes,
                message_id=received.message.message_id,
            )
            delivery = _delivery(envelope, message.attributes, received.message.message_id)
        except InvalidTaskError as exc:
            item.error_type, item.error_message = exc.error_type, str(exc)
            return self._dead_letter_poison(message, exc)
        task_type = self.task_types.get(envelope.task_type)
        with task_context(task_id=envelope.task_id, task_type=envelope.task_type):
            while True:
                stored = self.status.read(envelope.task_id)
                record = stored.record if stored else None
                verdict = lifecycle.assess(record, delivery, utcnow())
                if verdict == Verdict.WAIT:
                    if self._wait_for_claim(message, envelope.task_id):
                        continue
                    self.settler.nack([message.ack_id])
                    return Outcome.RELEASED
                if verdict == Verdict.DUPLICATE:
                    self.settler.ack(message.ack_id)
                    return Outcome.DUPLICATE
                if verdict == Verdict.CANCELLED:
                    return self.recorder.finish_cancelled(message, envelope.task_id, None)
                if verdict == Verdict.DEAD:
                    return self._already_dead(message, record)
                if self._deliveries_running_out(message) and self._refresh(message, record):
                    return Outcome.RELEASED
                outcome = self._run(
                    item, message, delivery, task_type, envelope, payload, record, verdict
                )
                if outcome is not None:
                    return outcome

    def _run(self, item, message, delivery, task_type, envelope, payload, record, verdict):
        """Run the task once and record it; None when it must be judged again first."""
        attempt = (record.attempts if record else 0) + 1
        suspect = _suspect(record, verdict, message)
        run = Run(
            settings=self.settings,
            bucket=self.bucket,
            claims=self.claims,
            task_type=task_type,
            envelope=envelope,
            payload=payload,
            delivery=delivery,
            attempt=attempt,
            delivery_attempt=message.delivery_attempt or 0,
            execution=self.execution,
            storage_retry=self.storage_retry,
            claimed=suspect,
            isolated=suspect or task_type.isolated,
            isolation=self.isolation,
        )
        if suspect:
            # Claim before running, so the suspicion is on record (a re-published message
            # starts its delivery count afresh): a dead run's claim is taken over and
            # counted, and a delivery no run ever settled counts as an interruption too.
            taken = self.status.transition(
                delivery.task_id,
                lifecycle.claim(
                    delivery,
                    run.run_id,
                    self.execution,
                    utcnow(),
                    self.settings.claim_seconds,
                    isolated=True,
                    vanished=verdict != Verdict.TAKE_OVER,
                ),
            )
            if taken.refused:
                return None
            attempt = run.attempt = run.ctx.run_attempt = taken.record.attempts
        item.run, item.attempt = run, attempt
        # Wait (message leased) until the run's memory fits in the execution's budget.
        self.leases.hold(message.ack_id, time.monotonic() + self.settings.claim_seconds * 2)
        if not self.memory.reserve(run.reservation_mb, self.shutdown):
            self.settler.nack([message.ack_id])
            return Outcome.RELEASED
        try:
            self.leases.hold(message.ack_id, run.ctx.deadline + LEASE_MARGIN_SECONDS)
            if self.shutdown.is_set():
                run.stop(SHUTDOWN)
            result = run.execute()
        finally:
            self.memory.release(run.reservation_mb)
        outcome, failure = self.recorder.record(message, delivery, result)
        if failure is not None:
            item.error_type, item.error_message = failure.error_type, failure.message
        return outcome

    # --- holding, refreshing, dead letters ---------------------------------------------------

    def _wait_for_claim(self, message: Message, task_id: str) -> bool:
        """Hold the message while another run's claim on the task lasts; False on shutdown."""
        while not self.shutdown.is_set():
            stored = self.status.read(task_id)
            run = stored.record.run if stored else None
            now = utcnow()
            if run is None or not run.live(now):
                return True
            self.leases.hold(message.ack_id, time.monotonic() + self.settings.claim_seconds * 2)
            remaining = (run.lease_until - now).total_seconds()
            self.shutdown.wait(min(WAIT_POLL_SECONDS, max(0.05, remaining)))
        return False

    def _deliveries_running_out(self, message: Message) -> bool:
        # Pub/Sub dead-letters a message by itself after PUBSUB_MAX_DELIVERY_ATTEMPTS
        # deliveries, whatever the cause: crashes, expired leases, outages. Only the task's own
        # failures may take it to the DLQ, so from half that many deliveries on the message is
        # swapped for a fresh one: as many deliveries again may be lost, or their re-publish
        # fail, before Pub/Sub's limit.
        attempt = message.delivery_attempt or 0
        return attempt >= self.settings.refresh_delivery_attempt

    def _refresh(self, message: Message, record: TaskStatus | None) -> bool:
        """Re-publish the message as a fresh one and ack this one; False if the publish
        failed, and the task is run on this delivery instead (it is still far from Pub/Sub's
        limit, and handing it back would only spend another delivery)."""
        attributes = {k: v for k, v in message.attributes.items() if not k.startswith("goog")}
        attributes[REFRESHED_FROM] = message.message_id
        unsettled = _unsettled_deliveries(record, message)
        if unsettled:
            attributes[UNSETTLED_DELIVERIES] = str(unsettled)
        try:
            # Back to the topic of the queue it came from (the one this execution drains).
            self.publisher.publish(
                self.settings.topic_path_for(self.settings.queue), message.data, attributes
            )
        except PublishError as exc:
            log.warning(
                "could not re-publish a message on delivery %s; running it on this one: %s",
                message.delivery_attempt,
                exc,
            )
            return False
        self.settler.ack(message.ack_id)
        log.info(
            "re-published on delivery %s, before Pub/Sub's limit; the old message is acked",
            message.delivery_attempt,
        )
        return True

    def _already_dead(self, message: Message, record: TaskStatus) -> Outcome:
        info = record.dead_letter
        if info is not None and info.pending and info.by == "worker":
            # Its run decided to dead-letter it but the publish never happened: finish it.
            return self.recorder.publish_dead_letter(message, record)
        self.settler.ack(message.ack_id)
        return Outcome.DUPLICATE

    def _dead_letter_poison(self, message: Message, exc: InvalidTaskError) -> Outcome:
        outcome = self._dead_letter_unrecorded(message, exc.error_type, str(exc))
        if outcome == Outcome.DEAD_LETTERED:
            self._record_poison(message, exc)
        return outcome

    def _dead_letter_unrecorded(self, message: Message, error_type: str, error_message: str):
        """Dead-letter a message that is no task we can run; nack if the DLQ publish fails."""
        try:
            dead_letter(
                self.publisher,
                message.data,
                message.attributes,
                error_type=error_type,
                error_message=error_message,
                delivery_attempt=message.delivery_attempt,
                task_fields=peek_task_fields(message.data, message.attributes),
            )
        except PublishError as exc:
            log.error("dead-letter publish failed; message returned to the queue: %s", exc)
            self.settler.delay(message.ack_id, self.settings.retry_min_backoff_seconds)
            return Outcome.RELEASED
        self.settler.ack(message.ack_id)
        return Outcome.DEAD_LETTERED

    def _record_poison(self, message: Message, exc: InvalidTaskError) -> None:
        """A record for a poison message that names a task id nobody else has used (only)."""
        fields = peek_task_fields(message.data, message.attributes)
        task_id = fields.get("task_id", "")
        if not _valid_task_id(task_id):
            return
        now = utcnow()
        error = ErrorInfo(type=exc.error_type, message=str(exc)[:2000], at=now, attempt=1)
        record = TaskStatus(
            task_id=task_id,
            task_type=fields.get("task_type") or "unknown",
            state=TaskState.QUEUED,
        ).entering(
            TaskState.DEAD_LETTERED,
            now,
            attempts=1,
            failures=1,
            last_error=error,
            errors=[error],
            dead_letter=DeadLetterInfo(error_type=exc.error_type, poison=True),
            finished_at=now,
        )
        try:
            # Create-only: a poison message never overwrites a real task's record.
            self.status.create(record)
        except Exception as write_exc:
            log.warning("status record of a poison message not written: %s", write_exc)


def _delivery(envelope, attributes: dict[str, str], message_id: str) -> Delivery:
    raw = attributes.get("replay_count") or "0"
    if not raw.isdigit() or len(raw) > 6:
        raise InvalidTaskError(
            f"attribute replay_count must be a small whole number, not {raw[:40]!r}",
            error_type="invalid_attribute",
        )
    return Delivery(
        task_id=envelope.task_id,
        task_type=envelope.task_type,
        message_id=message_id,
        submitted_at=envelope.submitted_at,
        replay_count=int(raw),
        replay_of=attributes.get("replay_of") or None,
        payload=envelope.payload,
    )


def _suspect(record: TaskStatus | None, verdict: Verdict, message: Message) -> bool:
    """Whether the task may have killed an execution, so its run must be isolated.

    A run that died holding the task (its claim expired), or a delivery that came back more
    often than the task failed (on this message or the one it was re-published from): an
    execution ended without settling it. This very task may have killed it (memory, a
    crash), even before it could claim anything, so it runs in a child process from now on,
    apart from the tasks beside it.
    """
    if verdict == Verdict.TAKE_OVER or (record is not None and record.interruptions):
        return True
    return _unsettled_deliveries(record, message) > 0


def _unsettled_deliveries(record: TaskStatus | None, message: Message) -> int:
    """Deliveries of the task no run settled: those of this message beyond the task's
    failures, plus those its re-published predecessors carried over."""
    raw = message.attributes.get(UNSETTLED_DELIVERIES) or "0"
    carried = int(raw) if raw.isdigit() and len(raw) <= 6 else 0
    unexplained = (message.delivery_attempt or 1) - 1 - (record.failures if record else 0)
    return carried + max(0, unexplained)


def _valid_task_id(task_id: str) -> bool:
    return bool(re.fullmatch(TASK_ID_PATTERN, task_id))
