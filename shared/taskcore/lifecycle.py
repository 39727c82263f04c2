"""The rules of a task's life: what each delivery may do to its status record, and when.

Every function here is pure: it reads the record as it is (None when there is none yet) and
returns the record to write, a Refusal, or None (nothing to write). `StatusStore.transition`
applies them with a write conditional on what was read, and re-applies them to the newer
record whenever someone else wrote first. So each rule is judged against the latest record:

- `succeeded` and `cancelled` are terminal; a dead-lettered task runs again only as a replay
  (a higher replay_count), never because a duplicate of its message turned up;
- a run *claims* the task (`run`, with a lease renewed while it runs): while a claim is live,
  no other delivery runs the task; a claim left to expire means its execution died, which
  the next run counts as an interruption;
- only the run that holds the claim (or, when nobody holds one, any run) may record its
  result, and a result from an older life of the task (a lower replay_count) never lands.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from taskcore.status import (
    ENDED,
    PAYLOAD_KEPT_BYTES,
    TERMINAL,
    DeadLetterInfo,
    ErrorInfo,
    OutputRef,
    Progress,
    Refusal,
    RunClaim,
    TaskState,
    TaskStatus,
)

# Errors a record keeps in its history (the current one is also `last_error`).
ERRORS_KEPT = 20


@dataclass(frozen=True)
class Delivery:
    """What a message says about the task it carries."""

    task_id: str
    task_type: str
    message_id: str
    queue: str = "default"
    submitted_at: datetime | None = None
    replay_count: int = 0
    replay_of: str | None = None
    payload: dict | None = None


def kept_payload(payload: dict | None) -> tuple[dict | None, int | None]:
    """(the payload if small enough to keep in the record, its size as JSON)."""
    if payload is None:
        return None, None
    size = len(json.dumps(payload, separators=(",", ":"), default=str).encode("utf-8"))
    return (payload if size <= PAYLOAD_KEPT_BYTES else None), size


class Verdict(enum.StrEnum):
    """What a delivery should do, judged from the record as read."""

    RUN = "run"  # nobody holds the task: run it (claim it if it takes a while)
    TAKE_OVER = "take_over"  # a run died holding it: claim it first, then run in isolation
    WAIT = "wait"  # another run holds a live claim: keep the message, look again later
    DUPLICATE = "duplicate"  # it succeeded already
    CANCELLED = "cancelled"  # it was cancelled
    DEAD = "dead"  # it was dead-lettered, and this is not a replay of it


def newer_life(delivery: Delivery, record: TaskStatus) -> bool:
    """Whether the delivery starts a newer life than the record describes: a replay, or the
    real task behind a record only a poison message with its id wrote."""
    if record.dead_letter is not None and record.dead_letter.poison:
        return True
    return delivery.replay_count > record.replay_count


def assess(record: TaskStatus | None, delivery: Delivery, now: datetime) -> Verdict:
    """What to do with a delivery, given the task's record."""
    if record is None:
        return Verdict.RUN
    if record.state == TaskState.SUCCEEDED:
        return Verdict.DUPLICATE
    if record.state == TaskState.CANCELLED:
        return Verdict.CANCELLED
    if record.state == TaskState.DEAD_LETTERED and not newer_life(delivery, record):
        return Verdict.DEAD
    live = record.run is not None and record.run.live(now)
    if record.cancel_requested_at is not None and not live:
        return Verdict.CANCELLED  # asked to stop, and nobody runs it any more
    if record.run is not None:
        return Verdict.WAIT if live else Verdict.TAKE_OVER
    return Verdict.RUN


def _guard(record: TaskStatus | None, delivery: Delivery, run_id: str, now: datetime):
    """The Refusal for a run that may not act on this record, else None."""
    if record is None:
        return None
    if record.state in TERMINAL:
        return Refusal("finished", record)
    if record.replay_count > delivery.replay_count:
        return Refusal("older_life", record, "a newer replay of this task exists")
    if record.state == TaskState.DEAD_LETTERED and not newer_life(delivery, record):
        return Refusal("dead_lettered", record)
    if record.run is not None and record.run.id != run_id and record.run.live(now):
        return Refusal("held", record, f"run {record.run.id} holds the task")
    if record.cancel_requested_at is not None:
        return Refusal("cancelled", record, "the task was cancelled")
    return None


def _base(record: TaskStatus | None, delivery: Delivery) -> TaskStatus:
    """The record to change: the existing one, or a fresh one for a task seen the first time."""
    if record is None:
        payload, payload_bytes = kept_payload(delivery.payload)
        return TaskStatus(
            task_id=delivery.task_id,
            task_type=delivery.task_type,
            state=TaskState.QUEUED,
            queue=delivery.queue,
            submitted_at=delivery.submitted_at,
            message_id=delivery.message_id,
            replay_count=delivery.replay_count,
            replay_of=delivery.replay_of,
            payload=payload,
            payload_bytes=payload_bytes,
        )
    if newer_life(delivery, record):
        # A replay starts a new life: a fresh retry budget; the history and errors stay.
        return record.model_copy(
            update={
                "replay_count": delivery.replay_count,
                "failures": 0,
                "interruptions": 0,
                "dead_letter": None,
                "finished_at": None,
                "outputs": [],
            }
        )
    return record


def claim(
    delivery: Delivery,
    run_id: str,
    execution: str,
    now: datetime,
    lease_seconds: float,
    *,
    isolated: bool = False,
    vanished: bool = False,
):
    """Claim the task for run `run_id` (state running), unless someone else holds or ended it.

    vanished: its message came back without any run having settled it (an execution died
    with it before claiming anything): counted as an interruption, as an expired claim is.
    """

    def change(record: TaskStatus | None):
        refusal = _guard(record, delivery, run_id, now)
        if refusal is not None:
            return refusal
        base = _base(record, delivery)
        if base.run is not None and base.run.id == run_id:
            return None  # already ours
        interrupted = base.run is not None  # its claim expired: that run's execution died
        interruptions = base.interruptions + int(interrupted)
        if vanished and not interrupted:
            interruptions = max(interruptions, 1)
        return base.entering(
            TaskState.RUNNING,
            now,
            attempts=base.attempts + 1,
            interruptions=interruptions,
            run=RunClaim(
                id=run_id,
                execution=execution,
                started_at=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                isolated=isolated,
            ),
            started_at=base.started_at or now,
            execution=execution,
            message_id=delivery.message_id,
            progress=None,
        )

    return change


def renew(run_id: str, now: datetime, lease_seconds: float, progress: Progress | None = None):
    """Extend run_id's claim (and record its progress); refused once the claim is not ours."""

    def change(record: TaskStatus | None):
        if record is None or record.run is None or record.run.id != run_id:
            return Refusal("lost", record, "the claim is no longer this run's")
        if record.cancel_requested_at is not None:
            return Refusal("cancelled", record, "the task was cancelled")
        run = record.run.model_copy(update={"lease_until": now + timedelta(seconds=lease_seconds)})
        update = {"run": run}
        if progress is not None:
            update["progress"] = progress
        return record.model_copy(update=update)

    return change


def succeed(
    delivery: Delivery,
    run_id: str,
    execution: str,
    attempt: int,
    outputs: list[OutputRef],
    now: datetime,
):
    """Record that run_id succeeded with these outputs (the outputs are already durable)."""

    def change(record: TaskStatus | None):
        refusal = _guard(record, delivery, run_id, now)
        if refusal is not None:
            return refusal
        base = _base(record, delivery)
        return base.entering(
            TaskState.SUCCEEDED,
            now,
            attempts=max(base.attempts, attempt),
            run=None,
            outputs=outputs,
            # The error of an earlier attempt or life stays in `errors`, not as the current one.
            last_error=None,
            progress=Progress(fraction=1.0, at=now) if base.progress else None,
            started_at=base.started_at or now,
            finished_at=now,
            execution=execution,
            message_id=delivery.message_id,
        )

    return change


def fail(
    delivery: Delivery,
    run_id: str,
    execution: str,
    attempt: int,
    error: ErrorInfo,
    now: datetime,
    *,
    permanent: bool,
    max_failures: int,
):
    """Record a failed run: retrying, or dead_lettered (pending its DLQ publish) when permanent
    or when the task's failures reach max_failures."""

    def change(record: TaskStatus | None):
        refusal = _guard(record, delivery, run_id, now)
        if refusal is not None:
            return refusal
        base = _base(record, delivery)
        failures = base.failures + 1
        dead = permanent or failures >= max_failures
        return base.entering(
            TaskState.DEAD_LETTERED if dead else TaskState.RETRYING,
            now,
            attempts=max(base.attempts, attempt),
            failures=failures,
            last_error=error,
            errors=[*base.errors, error][-ERRORS_KEPT:],
            run=None,
            dead_letter=DeadLetterInfo(error_type=error.type, pending=True) if dead else None,
            started_at=base.started_at or now,
            finished_at=now if dead else None,
            execution=execution,
            message_id=delivery.message_id,
        )

    return change


def release(run_id: str, now: datetime):
    """Give the task back without a result (shutdown): run_id's claim ends, nothing counts."""

    def change(record: TaskStatus | None):
        if record is None or record.run is None or record.run.id != run_id:
            return None
        state = TaskState.RETRYING if record.failures else TaskState.QUEUED
        return record.entering(state, now, run=None)

    return change


def request_cancel(now: datetime):
    """DELETE /tasks/<id>: cancel a task that has not run yet at once; ask a running one to stop.

    Refused ("finished") for a task that succeeded, was dead-lettered or was cancelled.
    """

    def change(record: TaskStatus | None):
        if record is None:
            return Refusal("not_found", None)
        if record.state in ENDED:
            return Refusal("finished", record)
        if record.run is not None and record.run.live(now):
            if record.cancel_requested_at is not None:
                return None  # asked already
            return record.model_copy(update={"cancel_requested_at": now})
        return record.entering(
            TaskState.CANCELLED, now, run=None, cancel_requested_at=now, finished_at=now
        )

    return change


def cancelled(run_id: str | None, now: datetime):
    """The run that was asked to stop (or, with no live run, anyone) ends the task cancelled."""

    def change(record: TaskStatus | None):
        if record is None or record.state in ENDED:
            return None
        if record.run is not None and record.run.id != run_id and record.run.live(now):
            return Refusal("held", record)
        return record.entering(
            TaskState.CANCELLED,
            now,
            run=None,
            cancel_requested_at=record.cancel_requested_at or now,
            finished_at=now,
        )

    return change


def dead_letter_published(message_id: str):
    """The DLQ confirmed the dead letter the record said was pending."""

    def change(record: TaskStatus | None):
        if record is None or record.state != TaskState.DEAD_LETTERED or record.dead_letter is None:
            return None
        if not record.dead_letter.pending:
            return None
        info = record.dead_letter.model_copy(update={"pending": False, "message_id": message_id})
        return record.model_copy(update={"dead_letter": info})

    return change


def replaced_by(new_task_id: str):
    """A dead-lettered task was replayed with a changed payload, as the task new_task_id."""

    def change(record: TaskStatus | None):
        if record is None or record.state != TaskState.DEAD_LETTERED:
            return None
        if record.replayed_as == new_task_id:
            return None
        return record.model_copy(update={"replayed_as": new_task_id})

    return change


def exhausted_by_pubsub(now: datetime, delivery_count: int):
    """Pub/Sub dead-lettered the message on its own (its deliveries ran out): say so."""

    def change(record: TaskStatus | None):
        if record is None or record.state in ENDED:
            return None
        last = record.last_error
        error = ErrorInfo(
            type="delivery_attempts_exhausted",
            message=(
                f"delivery attempts exhausted ({delivery_count} deliveries; Pub/Sub "
                "dead-lettered the message itself)"
                + (f"; last error: {last.type}: {last.message}" if last else "")
            ),
            at=now,
            attempt=record.attempts,
        )
        return record.entering(
            TaskState.DEAD_LETTERED,
            now,
            run=None,
            last_error=error,
            errors=[*record.errors, error][-ERRORS_KEPT:],
            dead_letter=DeadLetterInfo(error_type=error.type, by="pubsub"),
            finished_at=now,
        )

    return change


def scheduled(delivery: Delivery, run_at: datetime, now: datetime) -> TaskStatus:
    """The record of a delayed task, `scheduled` until run_at (created only if none exists)."""
    return _base(None, delivery).entering(TaskState.SCHEDULED, now, run_at=run_at)


def came_due(now: datetime):
    """A scheduled task is being published: it is queued now (anything else stays as it is)."""

    def change(record: TaskStatus | None):
        if record is None or record.state != TaskState.SCHEDULED:
            return None
        return record.entering(TaskState.QUEUED, now)

    return change


def queued(delivery: Delivery, now: datetime) -> TaskStatus:
    """The record of a task just accepted (the API creates it only if none exists yet)."""
    return _base(None, delivery).entering(TaskState.QUEUED, now)
