"""Task status records: one JSON object per task at status/<task_id>.json, changed only by
conditional writes.

A record is a small state machine (taskcore.lifecycle decides each transition). Every write
is conditional on the generation that was read (`if_generation_match`), so two writers can
never both win: the loser reads the record again and re-decides against what is there now.
A record is never overwritten blindly, and `succeeded` and `cancelled` are terminal.

Each write carries a fresh `revision`. A conditional write whose answer was lost and whose
retry then fails its precondition is recognised as our own by that revision, not mistaken
for someone else's.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage
from pydantic import BaseModel, Field, field_validator

from taskcore.errors import InvalidTransitionError, StatusConflictError

log = logging.getLogger(__name__)

STATUS_PREFIX = "status/"
# Errors and state changes a record remembers (oldest dropped first).
HISTORY_LIMIT = 30
# A record keeps its task's payload up to this size (as JSON), so records stay small.
PAYLOAD_KEPT_BYTES = 16 * 1024


class TaskState(enum.StrEnum):
    """Where a task is in its life."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


# Nothing moves a task out of these.
TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.CANCELLED})
# The task has ended (a dead-lettered one may be replayed, which starts a new life).
ENDED = TERMINAL | {TaskState.DEAD_LETTERED}

# Which state may follow which: every write is checked against the record as read.
ALLOWED: dict[TaskState | None, frozenset[TaskState]] = {
    None: frozenset(TaskState),
    TaskState.SCHEDULED: frozenset({TaskState.SCHEDULED, TaskState.QUEUED, TaskState.CANCELLED}),
    TaskState.QUEUED: frozenset(set(TaskState) - {TaskState.SCHEDULED}),
    TaskState.RUNNING: frozenset(set(TaskState) - {TaskState.SCHEDULED}),
    TaskState.RETRYING: frozenset(set(TaskState) - {TaskState.SCHEDULED}),
    TaskState.DEAD_LETTERED: frozenset(set(TaskState) - {TaskState.SCHEDULED}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


def check_transition(old: TaskState | None, new: TaskState) -> None:
    """Raise InvalidTransitionError unless `new` may follow `old`."""
    if new not in ALLOWED[old]:
        raise InvalidTransitionError(f"a task cannot go from {old} to {new}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ErrorInfo(BaseModel):
    """One failure of one run."""

    type: str
    message: str
    at: datetime = Field(default_factory=utcnow)
    attempt: int = 0


class RunClaim(BaseModel):
    """The run that holds the task: nobody else runs it until the claim ends or expires."""

    id: str
    execution: str
    started_at: datetime
    lease_until: datetime
    isolated: bool = False

    def live(self, now: datetime | None = None) -> bool:
        """Whether the claim still holds (its holder renews it while it runs)."""
        return self.lease_until > (now or utcnow())


class OutputRef(BaseModel):
    """One output object of the run that succeeded."""

    name: str
    uri: str
    size: int | None = None
    content_type: str | None = None
    generation: int | None = None
    crc32c: str | None = None


class Progress(BaseModel):
    """How far a running task says it is."""

    fraction: float = Field(ge=0.0, le=1.0)
    message: str | None = None
    at: datetime = Field(default_factory=utcnow)


class HistoryEntry(BaseModel):
    """A state the task entered, and when."""

    state: TaskState
    at: datetime
    attempt: int = 0
    execution: str | None = None


class DeadLetterInfo(BaseModel):
    """How the task reached the dead-letter topic."""

    error_type: str
    by: str = "worker"  # or "pubsub": its delivery attempts ran out (crash loop, expiry)
    message_id: str | None = None
    # Set while the worker has decided but the DLQ has not yet confirmed the publish.
    pending: bool = False
    # A message that was no valid task, though it named this id: a real task may take it over.
    poison: bool = False


class TaskStatus(BaseModel):
    """What is known about one task."""

    task_id: str
    task_type: str
    state: TaskState
    queue: str = "default"
    # Runs started, runs that failed (the retry budget counts these), runs that vanished.
    attempts: int = 0
    failures: int = 0
    interruptions: int = 0
    last_error: ErrorInfo | None = None
    errors: list[ErrorInfo] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    run: RunClaim | None = None
    outputs: list[OutputRef] = Field(default_factory=list)
    progress: Progress | None = None
    # DELETE /tasks/<id> on a running task: its run stops at its next check and says so.
    cancel_requested_at: datetime | None = None
    dead_letter: DeadLetterInfo | None = None
    submitted_at: datetime | None = None
    # A delayed task: when it is due (it is `scheduled` until then).
    run_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    execution: str | None = None
    message_id: str | None = None
    # The task's payload as submitted (operators see it on the task's page); a payload over
    # PAYLOAD_KEPT_BYTES is not kept here, only its size.
    payload: dict[str, Any] | None = None
    payload_bytes: int | None = None
    replay_count: int = 0
    # A replay with a changed payload runs as a new task: the link both ways.
    replay_of: str | None = None
    replayed_as: str | None = None
    revision: str = ""

    @field_validator("state", mode="before")
    @classmethod
    def _legacy_state(cls, value: Any) -> Any:
        # Records written before `failed` was named for what it means.
        return TaskState.RETRYING if value == "failed" else value

    @field_validator("outputs", mode="before")
    @classmethod
    def _legacy_outputs(cls, value: Any) -> Any:
        # Records written when outputs were bare URIs.
        if isinstance(value, list):
            return [
                {"name": v.rsplit("/", 1)[-1], "uri": v} if isinstance(v, str) else v for v in value
            ]
        return value

    @property
    def output_uris(self) -> list[str]:
        return [output.uri for output in self.outputs]

    def entering(self, state: TaskState, now: datetime, **changes: Any) -> TaskStatus:
        """A copy in `state` (with changes), the state change added to the history."""
        history = self.history
        if state != self.state or not history:
            entry = HistoryEntry(
                state=state,
                at=now,
                attempt=changes.get("attempts", self.attempts),
                execution=changes.get("execution", self.execution),
            )
            history = [*history, entry][-HISTORY_LIMIT:]
        return self.model_copy(update={"state": state, "history": history, **changes}, deep=True)


def status_object_name(task_id: str) -> str:
    """The object that holds task_id's status record."""
    return f"{STATUS_PREFIX}{task_id}.json"


@dataclass(frozen=True)
class StoredStatus:
    """A record as read, with the generation its next conditional write must name."""

    record: TaskStatus
    generation: int


@dataclass(frozen=True)
class Refusal:
    """Why a change was not made, with the record it was judged against."""

    reason: str
    record: TaskStatus | None
    detail: str = ""


# A change reads the record as it is (None: no record yet) and returns the record to write,
# a Refusal, or None when there is nothing to write.
Change = Callable[[TaskStatus | None], "TaskStatus | Refusal | None"]
# Told of every record this store wrote, with the record it replaced (None: it created it).
OnWritten = Callable[[TaskStatus, "TaskStatus | None"], None]


@dataclass(frozen=True)
class TransitionResult:
    """What a transition did: the record now (as written, or as found) and whether we wrote it."""

    record: TaskStatus | None
    generation: int | None
    written: bool
    refusal: Refusal | None = None

    @property
    def refused(self) -> bool:
        return self.refusal is not None


class StatusStore:
    """Reads status records and changes them by conditional writes, in the pipeline bucket."""

    # Rounds of read → decide → write before giving up on a record that keeps changing.
    MAX_ROUNDS = 10

    def __init__(
        self,
        bucket: storage.Bucket,
        retry=None,
        timeout: float | None = None,
        on_written: OnWritten | None = None,
    ) -> None:
        self.bucket = bucket
        # The transition journal (taskcore.journal) listens here; see _written.
        self._on_written = on_written
        # None keeps the client's defaults; the worker passes one that rides out outages.
        self._call: dict[str, Any] = {} if retry is None else {"retry": retry}
        if timeout is not None:
            self._call["timeout"] = timeout

    def read(self, task_id: str) -> StoredStatus | None:
        """The record and its generation, in one request; None if there is none."""
        blob = self.bucket.blob(status_object_name(task_id))
        try:
            data = blob.download_as_bytes(**self._call)
        except gexc.NotFound:
            return None
        if blob.generation is None:
            raise StatusConflictError(
                f"the storage service did not say which generation of {blob.name} it returned"
            )
        return StoredStatus(TaskStatus.model_validate_json(data), int(blob.generation))

    def get(self, task_id: str) -> TaskStatus | None:
        """The task's status record, or None if there is none."""
        stored = self.read(task_id)
        return stored.record if stored else None

    def write(self, record: TaskStatus, generation: int | None) -> int:
        """Write if the stored generation is still `generation` (None: only if none exists).

        Returns the new generation; raises gexc.PreconditionFailed when the record changed.
        """
        blob = self.bucket.blob(status_object_name(record.task_id))
        blob.upload_from_string(
            record.model_dump_json(exclude_none=False),
            content_type="application/json",
            if_generation_match=generation or 0,
            **self._call,
        )
        return int(blob.generation) if blob.generation is not None else 0

    def create(self, record: TaskStatus) -> bool:
        """Write the record only if none exists yet; False when one already did."""
        record = record.model_copy(update={"revision": _revision()})
        try:
            self.write(record, None)
        except gexc.PreconditionFailed:
            stored = self.read(record.task_id)
            if stored is None or stored.record.revision != record.revision:
                return False
        self._written(record, None)
        return True

    def transition(self, task_id: str, change: Change) -> TransitionResult:
        """Apply change to the record as it is now, by a write conditional on what was read.

        On a conflict the record is read again and change decides again, so a change is
        always judged against the latest record. StatusConflictError after MAX_ROUNDS.
        """
        for _ in range(self.MAX_ROUNDS):
            stored = self.read(task_id)
            current = stored.record if stored else None
            generation = stored.generation if stored else None
            decided = change(current.model_copy(deep=True) if current else None)
            if decided is None:
                return TransitionResult(current, generation, written=False)
            if isinstance(decided, Refusal):
                return TransitionResult(current, generation, written=False, refusal=decided)
            check_transition(current.state if current else None, decided.state)
            new = decided.model_copy(update={"revision": _revision(), "updated_at": utcnow()})
            try:
                written = TransitionResult(new, self.write(new, generation), written=True)
            except gexc.PreconditionFailed:
                # Either someone else wrote in between, or this very write landed and only its
                # answer was lost (the client's retry then failed the precondition).
                after = self.read(task_id)
                if after is None or after.record.revision != new.revision:
                    continue
                written = TransitionResult(after.record, after.generation, written=True)
            self._written(written.record, current)
            return written
        raise StatusConflictError(
            f"status record of {task_id} kept changing over {self.MAX_ROUNDS} conditional writes"
        )

    def _written(self, record: TaskStatus, before: TaskStatus | None) -> None:
        # After the write: the record is durable whatever the listener does, and a listener
        # that fails (it only indexes) must not turn a done write into an error.
        if self._on_written is None:
            return
        try:
            self._on_written(record, before)
        except Exception:
            log.exception("on_written listener failed for %s", record.task_id)

    def list(self, state: TaskState | None = None, limit: int = 100) -> list[TaskStatus]:
        """Recent status records (by update time, newest first), optionally of one state."""
        records = []
        for blob in self.bucket.list_blobs(prefix=STATUS_PREFIX):
            try:
                record = TaskStatus.model_validate_json(blob.download_as_bytes())
            except (gexc.NotFound, ValueError):
                continue
            if state is None or record.state == state:
                records.append(record)
        records.sort(key=lambda r: r.updated_at, reverse=True)
        return records[:limit]


def _revision() -> str:
    return uuid.uuid4().hex
