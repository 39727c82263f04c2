"""Recording what a run came to, and settling its message accordingly.

The order is always: durable effect first (outputs, status record, dead letter), then the
ack. Every status write goes through taskcore.lifecycle, conditionally, so a run can only
record its result while it still may (see `Refusal` reasons below).
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from google.cloud import storage

from background_worker.acks import Settler
from background_worker.runs import RunEnd, RunResult
from taskcore import lifecycle
from taskcore.context import CANCELLED, SHUTDOWN
from taskcore.deadletter import dead_letter
from taskcore.errors import PublishError
from taskcore.failures import Failure, Kind
from taskcore.lifecycle import Delivery
from taskcore.outputs import discard_other_runs, discard_run
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import ErrorInfo, StatusStore, TaskStatus, utcnow

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """What happened to one message."""

    SUCCEEDED = "succeeded"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    RETRIED = "retried"
    CANCELLED = "cancelled"
    RELEASED = "released"
    INFRASTRUCTURE = "infrastructure"


@dataclass
class Message:
    """The message a run came from, as settling needs it."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    delivery_attempt: int | None


class Recorder:
    """Turns run results and verdicts into status writes, dead letters and acks."""

    def __init__(
        self,
        settings: Settings,
        bucket: storage.Bucket,
        status: StatusStore,
        publisher: Publisher,
        settler: Settler,
        execution: str,
        storage_retry,
        wait_for_claim: Callable[[Message, str], bool],
    ) -> None:
        self.settings = settings
        self.bucket = bucket
        self.status = status
        self.publisher = publisher
        self.settler = settler
        self.execution = execution
        self.storage_retry = storage_retry
        # Holds the message while another run's claim lasts; False when shutting down.
        self.wait_for_claim = wait_for_claim

    def record(
        self, message: Message, delivery: Delivery, result: RunResult
    ) -> tuple[Outcome, Failure | None]:
        """Record the run's result and settle the message; the outcome and any failure."""
        if result.end == RunEnd.SUCCEEDED:
            return self._succeeded(message, delivery, result), None
        if result.end == RunEnd.STOPPED:
            return self._stopped(message, delivery, result), None
        failure = result.failure
        if failure.kind == Kind.INFRASTRUCTURE:
            self.settler.nack([message.ack_id])
            return Outcome.INFRASTRUCTURE, failure
        return self._failed(message, delivery, result, failure), failure

    # --- success ---------------------------------------------------------------------------

    def _succeeded(self, message: Message, delivery: Delivery, result: RunResult) -> Outcome:
        while True:
            done = self.status.transition(
                delivery.task_id,
                lifecycle.succeed(
                    delivery,
                    result.run_id,
                    self.execution,
                    result.attempt,
                    result.outputs,
                    utcnow(),
                ),
            )
            if done.written:
                self._discard_older_runs(done.record, result.run_id, message.delivery_attempt)
                self.settler.ack(message.ack_id)
                return Outcome.SUCCEEDED
            reason = done.refusal.reason
            if reason == "held" and self.wait_for_claim(message, delivery.task_id):
                continue  # another run holds it; once its claim ends, judge again
            self._discard(delivery.task_id, result.run_id)
            if reason == "cancelled":  # cancelled while it ran: its result does not count
                return self.finish_cancelled(message, delivery.task_id, result.run_id)
            if reason == "held":  # shutting down while waiting
                self.settler.nack([message.ack_id])
                return Outcome.RELEASED
            # It ended meanwhile (succeeded, cancelled, dead-lettered) or a newer life exists.
            self.settler.ack(message.ack_id)
            return Outcome.DUPLICATE

    def _discard_older_runs(self, record: TaskStatus, run_id: str, delivery_attempt) -> None:
        # A run that died before claiming the task left no trace in the record, but its
        # message came back: a first delivery of a first attempt is the only run there was.
        if record.attempts <= 1 and not record.interruptions and (delivery_attempt or 1) <= 1:
            return
        try:
            discard_other_runs(self.bucket, record.task_id, run_id, retry=self.storage_retry)
        except Exception as exc:  # best effort: leftovers are never named by the record
            log.warning("outputs of earlier runs not deleted: %s", exc)

    def _discard(self, task_id: str, run_id: str) -> None:
        try:
            discard_run(self.bucket, task_id, run_id, retry=self.storage_retry)
        except Exception as exc:
            log.warning("outputs of a run that did not count not deleted: %s", exc)

    # --- stopped from outside ----------------------------------------------------------------

    def _stopped(self, message: Message, delivery: Delivery, result: RunResult) -> Outcome:
        self._discard(delivery.task_id, result.run_id)
        if result.stop_reason == SHUTDOWN:
            if result.claimed:
                self._release_claim(delivery.task_id, result.run_id)
            self.settler.nack([message.ack_id])
            return Outcome.RELEASED
        if result.stop_reason == CANCELLED:
            return self.finish_cancelled(message, delivery.task_id, result.run_id)
        # Superseded: another run holds the task. Come back once its claim has run out; by
        # then it has ended (a duplicate) or died (this message takes over).
        self.settler.delay(message.ack_id, self.settings.claim_seconds)
        return Outcome.RELEASED

    def finish_cancelled(self, message: Message, task_id: str, run_id: str | None) -> Outcome:
        """Record the task cancelled (unless it ended otherwise meanwhile), then ack."""
        done = self.status.transition(task_id, lifecycle.cancelled(run_id, utcnow()))
        if done.refused:  # another run holds it: leave the message for after its claim
            self.settler.delay(message.ack_id, self.settings.claim_seconds)
            return Outcome.RELEASED
        self.settler.ack(message.ack_id)
        return Outcome.CANCELLED

    def _release_claim(self, task_id: str, run_id: str) -> None:
        try:
            self.status.transition(task_id, lifecycle.release(run_id, utcnow()))
        except Exception as exc:  # the claim then simply runs out
            log.warning("claim not released: %s", exc)

    # --- failure -------------------------------------------------------------------------

    def _failed(
        self, message: Message, delivery: Delivery, result: RunResult, failure: Failure
    ) -> Outcome:
        self._discard(delivery.task_id, result.run_id)
        error = ErrorInfo(type=failure.error_type, message=failure.message, attempt=result.attempt)
        done = self.status.transition(
            delivery.task_id,
            lifecycle.fail(
                delivery,
                result.run_id,
                self.execution,
                result.attempt,
                error,
                utcnow(),
                permanent=failure.permanent,
                max_failures=self.settings.max_delivery_attempts,
            ),
        )
        if done.refused:
            if done.refusal.reason == "cancelled":
                return self.finish_cancelled(message, delivery.task_id, result.run_id)
            if done.refusal.reason == "held":
                # Another run holds the task: this failure does not count.
                self.settler.delay(message.ack_id, self.settings.claim_seconds)
                return Outcome.RELEASED
            self.settler.ack(message.ack_id)
            return Outcome.DUPLICATE
        record = done.record
        if record.dead_letter is not None:
            return self.publish_dead_letter(message, record)
        self.settler.delay(message.ack_id, self.backoff(record.failures))
        return Outcome.RETRIED

    def backoff(self, failures: int) -> float:
        """Seconds before the next attempt: exponential from the minimum, jittered, capped."""
        low = self.settings.retry_min_backoff_seconds
        high = self.settings.retry_max_backoff_seconds
        delay = min(high, low * 2 ** max(0, failures - 1))
        return delay * random.uniform(0.8, 1.0)

    def publish_dead_letter(self, message: Message, record: TaskStatus) -> Outcome:
        """Publish the dead letter the record says is pending, confirm it there, then ack."""
        error = record.last_error
        try:
            dlq_message_id = dead_letter(
                self.publisher,
                message.data,
                message.attributes,
                error_type=error.type if error else record.dead_letter.error_type,
                error_message=error.message if error else "",
                delivery_attempt=message.delivery_attempt,
                task_fields={
                    "task_id": record.task_id,
                    "task_type": record.task_type,
                    "attempts": str(record.attempts),
                    "failures": str(record.failures),
                },
            )
        except PublishError as exc:
            # The record says dead_lettered (pending): the next delivery finishes the job.
            log.error("dead-letter publish failed; message returned to the queue: %s", exc)
            self.settler.delay(message.ack_id, self.settings.retry_min_backoff_seconds)
            return Outcome.RELEASED
        try:
            self.status.transition(record.task_id, lifecycle.dead_letter_published(dlq_message_id))
        except Exception as exc:  # the dead letter is out: a pending flag left behind is harmless
            log.warning("dead-letter confirmation not recorded: %s", exc)
        self.settler.ack(message.ack_id)
        return Outcome.DEAD_LETTERED
