"""Everything the checker judges, gathered once the campaign has drained (`collect`).

Read straight from the emulators, past the proxies, and read-only: every status record in
the bucket, every message the DLQ subscription holds (browsed: held, then handed back,
nothing consumed, no record reconciled), and the content of every output a succeeded
record names, at the generation it names. The ledger, the watcher and the execution runner
add what the campaign itself saw. `Evidence` is plain data, so tests can doctor it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage

from chaos.executions import ExecutionRecord
from chaos.ledger import Tracked
from chaos.records import Observation
from chaos.violations import Violation
from chaos.workload import TaskSpec
from taskcore.dlq.letters import DeadLetter, DeadLetterFilter
from taskcore.dlq.scan import browse
from taskcore.outputs import crc32c_of
from taskcore.settings import Settings
from taskcore.status import STATUS_PREFIX, StatusStore, StoredStatus, TaskState

log = logging.getLogger(__name__)

READ_THREADS = 16


@dataclass(frozen=True)
class DeadLetterView:
    """One DLQ message as the checker needs it."""

    message_id: str
    task_id: str
    task_type: str | None
    error_type: str
    error_message: str
    by_worker: bool
    replay_count: int
    payload: dict[str, Any] | None = None

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterView:
        body = letter.body()
        payload = body.get("payload") if isinstance(body, dict) else None
        return cls(
            message_id=letter.message_id,
            task_id=letter.task_id,
            task_type=letter.task_type,
            error_type=letter.error_type,
            error_message=letter.error_message[:300],
            by_worker=letter.by_worker,
            replay_count=letter.replay_count,
            payload=payload if isinstance(payload, dict) else None,
        )

    def describe(self) -> str:
        by = "worker" if self.by_worker else "pubsub"
        return (
            f"dead letter {self.message_id} ({self.error_type} by {by}, replay_count "
            f"{self.replay_count}: {self.error_message[:120]})"
        )


@dataclass(frozen=True)
class OutputObject:
    """An output named by a succeeded record, read at the generation the record names."""

    uri: str
    generation: int | None
    found: str  # "yes", "missing", or "other_generation" (the object was rewritten)
    data: bytes | None = None
    crc32c: str | None = None  # of the bytes read


@dataclass(frozen=True)
class ExecutionView:
    """How one worker execution ended, as the runner recorded it."""

    name: str
    ended: bool
    ended_by: str | None
    returncode: int | None
    exited_within_bound: bool | None
    exit_lag_seconds: float | None
    faults: tuple[str, ...] = ()

    @classmethod
    def of(cls, record: ExecutionRecord) -> ExecutionView:
        return cls(
            name=record.name,
            ended=not record.running,
            ended_by=str(record.ended_by) if record.ended_by else None,
            returncode=record.returncode,
            exited_within_bound=record.exited_within_bound,
            exit_lag_seconds=record.exit_lag_seconds,
            faults=tuple(str(kind) for kind, _at in record.faults),
        )


@dataclass
class Evidence:
    """What the checker judges; see the module docstring."""

    bucket_name: str
    max_failures: int
    exit_bound_seconds: float = 0.0
    tracked: dict[str, Tracked] = field(default_factory=dict)
    unaccepted: dict[str, TaskSpec] = field(default_factory=dict)
    records: dict[str, StoredStatus] = field(default_factory=dict)
    dead_letters: list[DeadLetterView] = field(default_factory=list)
    outputs: dict[tuple[str, int | None], OutputObject] = field(default_factory=dict)
    first_outputs: dict[str, dict[str, int | None]] = field(default_factory=dict)
    last_sightings: dict[str, Observation] = field(default_factory=dict)
    watcher_violations: list[Violation] = field(default_factory=list)
    executions: list[ExecutionView] = field(default_factory=list)
    leftover_processes: list[str] = field(default_factory=list)

    def letters_by_task(self) -> dict[str, list[DeadLetterView]]:
        letters: dict[str, list[DeadLetterView]] = defaultdict(list)
        for letter in self.dead_letters:
            letters[letter.task_id].append(letter)
        return letters


def read_all_records(store: StatusStore, bucket: storage.Bucket) -> dict[str, StoredStatus]:
    """Every status record in the bucket, with its generation, by task id."""
    names = [
        blob.name[len(STATUS_PREFIX) : -len(".json")]
        for blob in bucket.list_blobs(prefix=STATUS_PREFIX)
        if blob.name.endswith(".json")
    ]
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="evidence") as pool:
        stored = list(pool.map(store.read, names))
    return {task_id: s for task_id, s in zip(names, stored, strict=True) if s is not None}


def read_outputs(
    bucket: storage.Bucket, records: dict[str, StoredStatus]
) -> dict[tuple[str, int | None], OutputObject]:
    """The content of every output each succeeded record names, at its named generation."""
    refs = [
        ref
        for stored in records.values()
        if stored.record.state == TaskState.SUCCEEDED
        for ref in stored.record.outputs
    ]
    prefix = f"gs://{bucket.name}/"

    def read(ref) -> OutputObject:
        if not ref.uri.startswith(prefix):
            return OutputObject(ref.uri, ref.generation, "missing")
        blob = bucket.blob(ref.uri[len(prefix) :])
        try:
            data = blob.download_as_bytes(if_generation_match=ref.generation)
        except gexc.NotFound:
            return OutputObject(ref.uri, ref.generation, "missing")
        except gexc.PreconditionFailed:
            return OutputObject(ref.uri, ref.generation, "other_generation")
        return OutputObject(ref.uri, ref.generation, "yes", data, crc32c_of(data))

    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="evidence") as pool:
        found = list(pool.map(read, refs))
    return {(obj.uri, obj.generation): obj for obj in found}


def read_dead_letters(settings: Settings) -> list[DeadLetterView]:
    """Every message in the DLQ subscription; nothing is consumed and no record is touched."""
    listing = browse(settings, DeadLetterFilter(everything=True))
    return [DeadLetterView.of(letter) for letter in listing.shown]


def collect(
    settings: Settings,
    bucket: storage.Bucket,
    *,
    max_failures: int,
    exit_bound_seconds: float,
    tracked: dict[str, Tracked],
    unaccepted: dict[str, TaskSpec],
    first_outputs: dict[str, dict[str, int | None]],
    last_sightings: dict[str, Observation],
    watcher_violations: list[Violation],
    executions: list[ExecutionRecord],
    leftover_processes: list[str] = (),
) -> Evidence:
    """Read the bucket and the DLQ (settings must reach the emulators directly)."""
    store = StatusStore(bucket)
    records = read_all_records(store, bucket)
    log.info("evidence: %d status records", len(records))
    letters = read_dead_letters(settings)
    log.info("evidence: %d dead letters", len(letters))
    outputs = read_outputs(bucket, records)
    log.info("evidence: %d outputs", len(outputs))
    return Evidence(
        bucket_name=bucket.name,
        max_failures=max_failures,
        exit_bound_seconds=exit_bound_seconds,
        tracked=tracked,
        unaccepted=unaccepted,
        records=records,
        dead_letters=letters,
        outputs=outputs,
        first_outputs=first_outputs,
        last_sightings=last_sightings,
        watcher_violations=list(watcher_violations),
        executions=[ExecutionView.of(record) for record in executions],
        leftover_processes=list(leftover_processes),
    )


def output_json(obj: OutputObject) -> Any:
    """An output's content as JSON, or None if it is not JSON."""
    try:
        return json.loads(obj.data or b"")
    except (ValueError, UnicodeDecodeError):
        return None
