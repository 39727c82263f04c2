"""Processing one received message: parse, skip if done, run its handler, settle it.

Outcomes and what they do to the message:
- succeeded: outputs written, then the `succeeded` status record, then acked;
- duplicate: the status record already says succeeded (redelivery or replay): acked
  without running again;
- dead_lettered: a permanent failure (or the last transient attempt) was published to the
  DLQ topic with its reason, then acked; if that publish fails, nacked, never dropped;
- retried: a transient failure, nacked so the retry policy backs off;
- cancelled: the execution is shutting down, nacked for prompt redelivery;
- infrastructure: GCS or Pub/Sub stayed unreachable past retries; nacked without
  counting against the task, and the execution stops (exit code 2).
"""

from __future__ import annotations

import enum
import logging
import re
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.pubsub_v1.types import ReceivedMessage

from background_worker.acks import Settler
from background_worker.context import TaskCancelled, WorkerContext
from background_worker.deferred import Deferred
from background_worker.leases import LeaseKeeper
from taskcore.clients import storage_retry
from taskcore.deadletter import dead_letter
from taskcore.envelope import TASK_ID_PATTERN, parse_message, peek_task_fields
from taskcore.errors import InfrastructureError, PermanentTaskError, PublishError, TaskError
from taskcore.events import Event
from taskcore.logs import task_context
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import StatusStore, TaskState, TaskStatus
from taskcore.tasks import TaskRegistry

log = logging.getLogger(__name__)

# A lease outlives the task's time limit by this much, so a task that overruns and is
# stopped still has time to be nacked before Pub/Sub redelivers it.
LEASE_MARGIN_SECONDS = 30.0
# Tasks that finish sooner never get a `running` status record (see _run).
RUNNING_RECORD_DELAY = 1.0


class Outcome(enum.StrEnum):
    """What happened to one message."""

    SUCCEEDED = "succeeded"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    RETRIED = "retried"
    CANCELLED = "cancelled"
    INFRASTRUCTURE = "infrastructure"


# The log event of each outcome (taskcore.events defines them; alerts filter on them).
OUTCOME_EVENTS = {
    Outcome.SUCCEEDED: Event.TASK_SUCCEEDED,
    Outcome.DUPLICATE: Event.TASK_DUPLICATE,
    Outcome.DEAD_LETTERED: Event.TASK_DEAD_LETTERED,
    Outcome.RETRIED: Event.TASK_RETRIED,
    Outcome.CANCELLED: Event.TASK_RELEASED,
    Outcome.INFRASTRUCTURE: Event.TASK_RELEASED,
}


@dataclass
class InFlight:
    """A message being processed, with its context once it has been parsed."""

    received: ReceivedMessage
    context: WorkerContext | None = None
    error_type: str | None = None
    error_message: str | None = None


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
        max_delivery_attempts: int,
        deferred: Deferred,
    ) -> None:
        self.settings = settings
        self.task_types = task_types
        self.bucket = bucket
        self.publisher = publisher
        self.settler = settler
        self.leases = leases
        self.max_delivery_attempts = max_delivery_attempts
        self.deferred = deferred
        self.execution = settings.cloud_run_execution or "local"
        self.storage_retry = storage_retry(settings)
        self.status = StatusStore(bucket, retry=self.storage_retry)

    def process(self, item: InFlight) -> Outcome:
        """Process one message to its outcome; never raises for anything the task did."""
        received = item.received
        message = received.message
        attributes = dict(message.attributes)
        attempt = received.delivery_attempt or None  # 0 means no dead-letter policy
        fields = peek_task_fields(message.data, attributes)
        with task_context(**fields, delivery_attempt=attempt, message_id=message.message_id):
            started = time.monotonic()
            try:
                outcome = self._run(item, attributes, attempt)
            except Exception as exc:
                # GCS down past retries (status read/write), or a bug here: either way the
                # message goes back to the queue; it is never lost.
                self.settler.nack([received.ack_id])
                if is_infrastructure_error(exc):
                    log.error("storage unreachable; message returned to the queue: %s", exc)
                    outcome = Outcome.INFRASTRUCTURE
                else:
                    log.exception("unexpected error processing message; returned to the queue")
                    outcome = Outcome.RETRIED
            finally:
                self.leases.release(received.ack_id)
            # One line per message outcome: the log-based metrics count these events.
            fields = {
                "event": OUTCOME_EVENTS[outcome],
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "error_type": item.error_type,
            }
            failed = outcome in (Outcome.RETRIED, Outcome.DEAD_LETTERED)
            log.log(
                logging.WARNING if failed else logging.INFO,
                "task %s%s",
                outcome.value,
                f": {item.error_message}" if item.error_message else "",
                extra={"json_fields": fields},
            )
            return outcome

    def _run(self, item: InFlight, attributes: dict[str, str], attempt: int | None) -> Outcome:
        received = item.received
        data = received.message.data
        try:
            envelope, payload = parse_message(
                self.task_types,
                data,
                attributes,
                self.settings.max_task_bytes,
                message_id=received.message.message_id,
            )
        except PermanentTaskError as exc:
            return self._dead_letter(
                item, attributes, attempt, exc, {}, _poison_status(data, attributes, attempt)
            )
        task_fields = {"task_id": envelope.task_id, "task_type": envelope.task_type}
        with task_context(**task_fields):
            previous = self.status.get(envelope.task_id)
            if previous is not None and previous.state == TaskState.SUCCEEDED:
                self.settler.ack(received.ack_id)
                return Outcome.DUPLICATE
            status = TaskStatus(
                task_id=envelope.task_id,
                task_type=envelope.task_type,
                state=TaskState.RUNNING,
                # Pub/Sub counts attempts when a dead-letter policy is set; otherwise we do.
                attempts=attempt or ((previous.attempts if previous else 0) + 1),
                last_error=previous.last_error if previous else None,
                submitted_at=envelope.submitted_at,
                started_at=_now(),
                execution=self.execution,
                message_id=received.message.message_id,
                replay_count=int(attributes.get("replay_count") or 0),
            )
            task_type = self.task_types.get(envelope.task_type)
            handler = task_type.handler
            ctx = WorkerContext(
                settings=self.settings,
                envelope=envelope,
                bucket=self.bucket,
                delivery_attempt=attempt or 0,
                time_limit=task_type.time_limit_seconds or self.settings.task_timeout_seconds,
                storage_retry=self.storage_retry,
            )
            item.context = ctx
            self.leases.hold(received.ack_id, ctx.deadline + LEASE_MARGIN_SECONDS)
            # The `running` record is written only for tasks still running after a moment:
            # fast tasks go straight from queued to succeeded, one GCS write fewer each.
            marker = self.deferred.schedule(RUNNING_RECORD_DELAY, lambda: self.status.put(status))
            try:
                try:
                    handler(ctx, payload)
                    ctx.check_alive()
                finally:
                    # After this, the running write has either not started or finished,
                    # so it can never land after (and overwrite) the final state.
                    marker.cancel()
                self._update(
                    status, TaskState.SUCCEEDED, outputs=[o["uri"] for o in ctx.outputs.written]
                )
            except TaskCancelled:
                self.settler.nack([received.ack_id])
                return Outcome.CANCELLED
            except PermanentTaskError as exc:
                return self._dead_letter(item, attributes, attempt, exc, task_fields, status)
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                return self._transient_failure(item, attributes, attempt, exc, task_fields, status)
            self.settler.ack(received.ack_id)
            return Outcome.SUCCEEDED

    def _update(self, status: TaskStatus | None, state: TaskState, exc=None, **fields) -> None:
        """Write the task's new state; the write's own failure is logged, never fatal here."""
        if status is None:
            return
        changes = {"state": state, "updated_at": _now(), **fields}
        if state != TaskState.RUNNING:
            changes["finished_at"] = changes["updated_at"]
        if exc is not None:
            changes["last_error"] = {
                "type": _error_type(exc),
                "message": _describe(exc)[:2000],
                "at": changes["updated_at"].isoformat(),
            }
        new = status.model_copy(update=changes)
        if state == TaskState.SUCCEEDED:
            # This record marks the task done; if it cannot be written the task must not be
            # acked, so the error propagates (a redelivery finds the outputs and finishes).
            self.status.put(new)
            return
        try:
            self.status.put(new)
        except Exception as write_exc:
            log.warning("status record not updated to %s: %s", state.value, write_exc)

    def _transient_failure(self, item, attributes, attempt, exc, task_fields, status) -> Outcome:
        if attempt is not None and attempt >= self.max_delivery_attempts:
            # The last attempt: dead-letter explicitly so the reason travels with the message.
            return self._dead_letter(item, attributes, attempt, exc, task_fields, status)
        item.error_type, item.error_message = _error_type(exc), _describe(exc)
        self._update(status, TaskState.FAILED, exc)
        self.settler.nack([item.received.ack_id])
        return Outcome.RETRIED

    def _dead_letter(self, item, attributes, attempt, exc, task_fields, status) -> Outcome:
        received = item.received
        error_type = item.error_type = _error_type(exc)
        item.error_message = _describe(exc)
        try:
            dead_letter(
                self.publisher,
                received.message.data,
                attributes,
                error_type=error_type,
                error_message=item.error_message,
                delivery_attempt=attempt,
                task_fields=task_fields,
            )
        except PublishError as publish_exc:
            # Never drop: without a confirmed dead letter the message goes back to the queue.
            log.error("dead-letter publish failed; message returned to the queue: %s", publish_exc)
            self.settler.nack([received.ack_id])
            return Outcome.RETRIED
        self._update(status, TaskState.DEAD_LETTERED, exc)
        self.settler.ack(received.ack_id)
        return Outcome.DEAD_LETTERED


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether exc means a backing service is unreachable (after retries), not the task failing."""
    return isinstance(
        exc,
        InfrastructureError
        | gexc.RetryError
        | gexc.ServiceUnavailable
        | requests.ConnectionError
        | ConnectionError,
    )


def _poison_status(data: bytes, attributes: dict[str, str], attempt: int | None):
    """A status record for an unparseable message, when it names a usable task_id."""
    fields = peek_task_fields(data, attributes)
    task_id = fields.get("task_id", "")
    if not re.fullmatch(TASK_ID_PATTERN, task_id):
        return None
    return TaskStatus(
        task_id=task_id,
        task_type=fields.get("task_type") or "unknown",
        state=TaskState.RUNNING,
        attempts=attempt or 1,
        started_at=_now(),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, TaskError):
        return exc.error_type
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, TaskError):
        # An unexpected exception: keep where it came from, for the operator reading the DLQ.
        frames = traceback.extract_tb(exc.__traceback__)[-1:]
        where = "".join(f" at {f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames)
        text = f"{type(exc).__name__}: {text}{where}"
    return text
