"""Idempotent submission: one Idempotency-Key, one task, however often or concurrently it is sent.

The key (scoped by the caller's API key) names a record `idempotency/<sha256>.json` that is
created with if_generation_match=0, so of any number of concurrent requests exactly one
creates it: that one publishes, then finalises the record with the message id. The others
read the record and wait (briefly) for the message id, then answer with the same task id.
A winner whose publish failed marks the record `failed`; the next request with the key takes
it over with the SAME task id, so a publish that landed after all is the same task (the
worker keys its work by task id). A winner that died leaves a `pending` record that goes
stale and is taken over the same way. Requests without the header never touch this module.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from pydantic import BaseModel, Field

from task_api.errors import RetryLaterError
from taskcore.errors import ApiRequestError, InfrastructureError

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
PREFIX = "idempotency/"
# Visible ASCII, like any token a client would generate (a UUID, a hash, an order number).
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_KEY_RE = re.compile(KEY_PATTERN)
ANONYMOUS_SCOPE = "anon"

# Each GCS call on the request path is bounded, so a slow bucket becomes a 503, not a hang.
GCS_TIMEOUT_SECONDS = 3.0
POLL_SECONDS = 0.03
# How long a pending record may sit before its writer is presumed dead, beyond the publish
# timeout the writer itself is bound by.
STALE_MARGIN_SECONDS = 5.0
RETRY_IN_PROGRESS_SECONDS = 1


class RecordState(enum.StrEnum):
    """Where the request that owns a key is."""

    PENDING = "pending"
    PUBLISHED = "published"
    FAILED = "failed"


class IdempotencyRecord(BaseModel):
    """What a key stands for: its task, the body it was used with, and how far it got."""

    task_id: str
    task_type: str
    body_hash: str
    state: RecordState
    message_id: str | None = None
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Claim:
    """The outcome of claiming a key: ours to publish (with a generation), or a replay."""

    name: str
    record: IdempotencyRecord
    generation: int | None = None

    @property
    def replay(self) -> bool:
        """True when the key's task was already published: answer with the record."""
        return self.record.state == RecordState.PUBLISHED


def check_key(key: str) -> str:
    """The key if it is 1-255 visible ASCII characters, else a 400."""
    if not _KEY_RE.fullmatch(key):
        raise ApiRequestError(
            f"{HEADER} must be 1 to 255 visible ASCII characters",
            code="invalid_idempotency_key",
            details=[{"field": HEADER, "message": "1-255 visible ASCII", "type": "pattern"}],
        )
    return key


def record_name(scope: str, key: str) -> str:
    """The object that holds key's record; the caller's scope keeps two callers' keys apart."""
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    return f"{PREFIX}{digest}.json"


def body_hash(task_type: str, fields: dict[str, Any]) -> str:
    """A hash of what was asked for, independent of key order and whitespace."""
    canonical = json.dumps(
        {"task_type": task_type, "fields": fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    """Claims, finalises and fails key records in the bucket."""

    def __init__(self, bucket_factory: Callable[[], storage.Bucket], publish_timeout: float):
        self._bucket_factory = bucket_factory
        self.wait_seconds = publish_timeout + 1.0
        self.stale_seconds = publish_timeout + STALE_MARGIN_SECONDS
        self._retry = DEFAULT_RETRY.with_timeout(GCS_TIMEOUT_SECONDS)

    def claim(self, name: str, task_id: str, task_type: str, hashed_body: str) -> Claim:
        """Make the key ours (create or take over) or return the published record to replay.

        422 when the key was used with another body; 409 when another request still holds
        it after waiting; 503 when the bucket is unreachable.
        """
        mine = IdempotencyRecord(
            task_id=task_id, task_type=task_type, body_hash=hashed_body, state="pending"
        )
        deadline = time.monotonic() + self.wait_seconds
        create = True
        while True:
            if create:
                generation = self._write(name, mine, if_generation_match=0)
                if generation is not None:
                    return Claim(name, mine, generation)
            current = self._read(name)
            # Gone (lifecycle) or rewritten between two reads: create on the next round.
            create = current is None
            if current is not None:
                claim = self._judge(name, current, mine)
                if claim is not None:
                    return claim
            if time.monotonic() >= deadline:
                raise RetryLaterError(
                    f"a request with this {HEADER} is still being processed; retry shortly",
                    status=409,
                    code="idempotency_in_progress",
                    retry_after=RETRY_IN_PROGRESS_SECONDS,
                )
            time.sleep(POLL_SECONDS)

    def _judge(
        self, name: str, current: tuple[IdempotencyRecord, int], mine: IdempotencyRecord
    ) -> Claim | None:
        """What an existing record means for us: replay, ours, taken over, 422, or wait (None)."""
        record, generation = current
        if record.body_hash != mine.body_hash:
            raise ApiRequestError(
                f"this {HEADER} was already used with a different request body",
                status=422,
                code="idempotency_key_reused",
                details=[{"field": HEADER, "message": "reused", "type": "idempotency"}],
            )
        if record.state == RecordState.PUBLISHED:
            return Claim(name, record)
        if record.task_id == mine.task_id:
            # Our own create, retried by the client library after a lost response.
            return Claim(name, record, generation)
        age = (datetime.now(UTC) - record.updated_at).total_seconds()
        if record.state == RecordState.FAILED or age > self.stale_seconds:
            return self._take_over(name, record, generation)
        return None

    def finish(self, claim: Claim, message_id: str) -> None:
        """Record the message id so waiting and later requests answer with it (best effort)."""
        record = claim.record.model_copy(
            update={
                "state": RecordState.PUBLISHED,
                "message_id": message_id,
                "updated_at": datetime.now(UTC),
            }
        )
        self._settle(claim, record)

    def fail(self, claim: Claim) -> None:
        """Release the key after a failed publish, keeping its task id for the retry."""
        record = claim.record.model_copy(
            update={"state": RecordState.FAILED, "updated_at": datetime.now(UTC)}
        )
        self._settle(claim, record)

    def _settle(self, claim: Claim, record: IdempotencyRecord) -> None:
        try:
            if self._write(claim.name, record, if_generation_match=claim.generation) is None:
                log.warning("idempotency record was taken over", extra=_fields(record))
        except InfrastructureError:
            # The task is (or is not) in Pub/Sub either way; a record left pending goes stale
            # and is taken over with the same task id.
            log.warning("idempotency record not updated", extra=_fields(record))

    def _take_over(self, name: str, record: IdempotencyRecord, generation: int) -> Claim | None:
        ours = record.model_copy(
            update={"state": RecordState.PENDING, "updated_at": datetime.now(UTC)}
        )
        new_generation = self._write(name, ours, if_generation_match=generation)
        if new_generation is None:
            return None  # someone else took it over first
        log.info("idempotency record taken over", extra=_fields(ours))
        return Claim(name, ours, new_generation)

    def _write(self, name: str, record: IdempotencyRecord, *, if_generation_match: int | None):
        """Write if the generation matches; the new generation, or None if it did not."""
        blob = self._bucket_factory().blob(name)
        try:
            blob.upload_from_string(
                record.model_dump_json(),
                content_type="application/json",
                if_generation_match=if_generation_match,
                timeout=GCS_TIMEOUT_SECONDS,
                retry=self._retry,
            )
        except gexc.PreconditionFailed:
            return None
        except (gexc.GoogleAPIError, requests.RequestException) as exc:
            raise InfrastructureError(
                f"idempotency record write failed: {type(exc).__name__}"
            ) from exc
        return int(blob.generation) if blob.generation is not None else 0

    def _read(self, name: str) -> tuple[IdempotencyRecord, int] | None:
        """The record and its generation, or None if there is none."""
        blob = self._bucket_factory().blob(name)
        try:
            blob.reload(timeout=GCS_TIMEOUT_SECONDS, retry=self._retry)
            generation = int(blob.generation)
            data = blob.download_as_bytes(
                if_generation_match=generation, timeout=GCS_TIMEOUT_SECONDS, retry=self._retry
            )
        except (gexc.NotFound, gexc.PreconditionFailed):
            return None  # gone, or rewritten between the two calls: the caller looks again
        except (gexc.GoogleAPIError, requests.RequestException) as exc:
            raise InfrastructureError(
                f"idempotency record read failed: {type(exc).__name__}"
            ) from exc
        return IdempotencyRecord.model_validate_json(data), generation


def _fields(record: IdempotencyRecord) -> dict[str, Any]:
    return {"json_fields": {"task_id": record.task_id, "state": str(record.state)}}
