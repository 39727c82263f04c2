"""Who did what to the DLQ: results, archives and audit records in the bucket (create-only)."""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import socket
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage

from taskcore.dlq.letters import DeadLetter
from taskcore.errors import TaskPipelineError

log = logging.getLogger(__name__)

ARCHIVE_PREFIX = "dlq-archive/"
AUDIT_PREFIX = "audit/"
# The audit record names at most this many tasks; the counts are always complete.
AUDIT_MAX_TASK_IDS = 1000


class DlqUsageError(TaskPipelineError):
    """Raised when an operation is asked for without saying which dead letters it means."""


@dataclass(frozen=True)
class Actor:
    """Who asked: an OS user at a host (CLI) or an admin key's id (API); never a key itself."""

    kind: str
    id: str

    @classmethod
    def os_user(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls("os_user", f"{user}@{socket.gethostname()}")

    @classmethod
    def api_key(cls, key: str) -> Actor:
        return cls("api_key", key_id(key))


def key_id(key: str) -> str:
    """A stable, non-reversible name for an API key: a prefix of its SHA-256."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class OperationResult:
    """What a replay or purge did; `ok` is False if anything failed or it was interrupted."""

    action: str
    filter: dict[str, Any]
    in_dlq: int = 0
    matched: int = 0
    selected: int = 0
    done: int = 0
    # DLQ messages beyond one per selected dead letter: copies of the same death (a worker
    # that crashed after publishing its dead letter published it again), handled with it.
    copies: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    # Chosen but deliberately not replayed (their task already succeeded), with the reason.
    skipped: list[dict[str, Any]] = field(default_factory=list)
    # Replays that run as new tasks (a --set changed the payload): original → new task id.
    new_tasks: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    cancelled: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    task_ids: list[str] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)
    archive: str | None = None
    audit: str | None = None
    audit_error: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.failed or self.interrupted or self.audit_error)

    @property
    def left_in_dlq(self) -> int:
        if self.dry_run or self.cancelled:
            return 0
        return self.selected - self.done - len(self.skipped)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "left_in_dlq": self.left_in_dlq}


def count_copies(letters: Sequence[DeadLetter]) -> int:
    """The DLQ messages of these dead letters beyond one each."""
    return sum(len(letter.copies) for letter in letters)


def now() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%S.%fZ")


def write_archive(bucket: storage.Bucket, letters: Sequence[DeadLetter]) -> str:
    """Write the dead letters as JSON lines to dlq-archive/<timestamp>.jsonl (create-only)."""
    name = f"{ARCHIVE_PREFIX}{_stamp(now())}.jsonl"
    lines = "".join(json.dumps(letter.record(), sort_keys=True) + "\n" for letter in letters)
    bucket.blob(name).upload_from_string(
        lines, content_type="application/x-ndjson", if_generation_match=0
    )
    return f"gs://{bucket.name}/{name}"


def write_audit(bucket: storage.Bucket, record: dict[str, Any]) -> str:
    """Append one audit record at audit/<timestamp>-<uuid>.json (create-only); its gs:// URI."""
    at = now()
    name = f"{AUDIT_PREFIX}{_stamp(at)}-{uuid.uuid4().hex[:12]}.json"
    bucket.blob(name).upload_from_string(
        json.dumps({"at": at.isoformat(), **record}, sort_keys=True),
        content_type="application/json",
        if_generation_match=0,
    )
    return f"gs://{bucket.name}/{name}"


def record_audit(bucket: storage.Bucket, actor: Actor, result: OperationResult, **options) -> None:
    """Record a replay or purge that ran; dry runs and declined ones changed nothing."""
    if result.dry_run or result.cancelled:
        return
    record = {
        "action": result.action,
        "actor": {"kind": actor.kind, "id": actor.id},
        "filter": result.filter,
        "options": {k: v for k, v in options.items() if v not in (None, {}, False)},
        "counts": {
            "in_dlq": result.in_dlq,
            "matched": result.matched,
            "selected": result.selected,
            "done": result.done,
            "copies": result.copies,
            "failed": len(result.failed),
            "skipped": len(result.skipped),
            "left_in_dlq": result.left_in_dlq,
        },
        "interrupted": result.interrupted,
        "archive": result.archive,
        "task_ids": result.task_ids[:AUDIT_MAX_TASK_IDS],
        "task_ids_truncated": len(result.task_ids) > AUDIT_MAX_TASK_IDS,
        "skipped": result.skipped[:AUDIT_MAX_TASK_IDS],
        "new_tasks": dict(list(result.new_tasks.items())[:AUDIT_MAX_TASK_IDS]),
    }
    try:
        result.audit = write_audit(bucket, record)
    except (gexc.GoogleAPICallError, OSError) as exc:
        result.audit_error = f"audit record not written: {exc}"
        log.error("%s", result.audit_error, extra={"json_fields": record})
