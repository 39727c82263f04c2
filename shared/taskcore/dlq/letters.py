"""A dead letter and what an operator wants to know of it, and how dead letters are chosen.

The reason comes from the worker's attributes (error_type, error_message, failed_at, ...)
or, for messages Pub/Sub dead-lettered itself, is "delivery attempts exhausted" plus the
last error of the task's status record.

Copies of one death (same `key`: a worker that died between publishing a dead letter and
recording it published publishes it again) are one dead letter: `merge_copies` makes the
first copy stand for the others, and acking it acks them all.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from taskcore.deadletter import DEAD_LETTER_KEY, dead_letter_key, describe_dead_letter
from taskcore.envelope import peek_task_fields
from taskcore.lifecycle import exhausted_by_pubsub
from taskcore.status import ENDED, StatusStore, TaskStatus

log = logging.getLogger(__name__)

PUBSUB_EXHAUSTED = "delivery attempts exhausted"


@dataclass
class DeadLetter:
    """One message of the DLQ subscription, with what an operator wants to know about it."""

    message_id: str
    ack_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime
    status: TaskStatus | None = None
    # Other DLQ messages reporting the same death (see `merge_copies`).
    copies: list[DeadLetter] = field(default_factory=list)

    @classmethod
    def from_received(cls, received) -> DeadLetter:
        message = received.message
        return cls(
            message_id=message.message_id,
            ack_id=received.ack_id,
            data=bytes(message.data),
            attributes=dict(message.attributes),
            publish_time=message.publish_time or datetime.now(UTC),
        )

    @cached_property
    def reason(self) -> dict[str, Any]:
        return describe_dead_letter(self.attributes)

    @property
    def by_worker(self) -> bool:
        return self.attributes.get("dead_lettered_by") == "worker"

    @cached_property
    def _task_fields(self) -> dict[str, str]:
        return peek_task_fields(self.data, self.attributes)

    @property
    def task_id(self) -> str:
        """The task's id; an id-less message is named after its dead letter, as replay names it."""
        return self._task_fields.get("task_id") or f"msg-{self.message_id}"

    @property
    def task_type(self) -> str | None:
        return self._task_fields.get("task_type")

    @cached_property
    def key(self) -> str:
        """The death it reports: the worker's dead_letter_key, else (Pub/Sub forwarded it, or
        an older worker published it) the same key derived from the task and its life."""
        return self.attributes.get(DEAD_LETTER_KEY) or dead_letter_key(
            self._task_fields.get("task_id"), self.attributes.get("replay_count"), self.message_id
        )

    @property
    def messages(self) -> list[DeadLetter]:
        """Every DLQ message of this dead letter: itself and its copies."""
        return [self, *self.copies]

    @property
    def message_ids(self) -> list[str]:
        return [letter.message_id for letter in self.messages]

    @property
    def error_type(self) -> str:
        return self.reason["error_type"] or "unknown"

    @property
    def error_message(self) -> str:
        if self.by_worker:
            return self.reason["error_message"] or ""
        last = self.status.last_error if self.status else None
        if last is not None and last.type == "delivery_attempts_exhausted":
            return last.message  # the reconciled record says it all, last real error included
        if last is not None and last.message:
            return f"{PUBSUB_EXHAUSTED}; last error: {last.type}: {last.message}"
        return PUBSUB_EXHAUSTED

    @property
    def attempts(self) -> int:
        attempts = self.reason["delivery_attempt"] or 0
        if not attempts and self.status is not None:
            return self.status.attempts
        return attempts

    @property
    def dead_lettered_at(self) -> datetime:
        """When the worker dead-lettered it (failed_at), else when the DLQ received it."""
        failed_at = self.reason.get("failed_at")
        if failed_at:
            try:
                return _aware(datetime.fromisoformat(failed_at))
            except ValueError:
                pass
        return _aware(self.publish_time)

    @property
    def source_subscription(self) -> str | None:
        return self.reason["source_subscription"]

    @property
    def replay_count(self) -> int:
        try:
            return int(self.attributes.get("replay_count") or 0)
        except ValueError:
            return 0

    def body(self) -> Any:
        """The message body as JSON, else as text, else None (binary)."""
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def summary(self) -> dict[str, Any]:
        """What `taskctl dlq list` and GET /admin/dlq show per message."""
        return {
            "message_id": self.message_id,
            "task_id": self.task_id,
            "task_type": self.task_type,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "dead_lettered_at": self.dead_lettered_at.isoformat(),
            "dead_lettered_by": "worker" if self.by_worker else "pubsub",
            "source_subscription": self.source_subscription,
            "replay_count": self.replay_count,
            "copies": len(self.messages),
        }

    def record(self) -> dict[str, Any]:
        """Everything about the message: what `dlq show` prints and what archives keep."""
        return {
            **self.summary(),
            "publish_time": _aware(self.publish_time).isoformat(),
            "message_ids": self.message_ids,
            "attributes": dict(sorted(self.attributes.items())),
            "body": self.body(),
            "data_base64": base64.b64encode(self.data).decode("ascii"),
            "status": self.status.model_dump(mode="json") if self.status else None,
        }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'30m', '2h', '7d' (ago), or an ISO 8601 time (UTC unless it says otherwise)."""
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:  # further back than datetime reaches (year 1)
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        at = _aware(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration like 30m, 2h or 7d nor an ISO 8601 time"
        ) from None
    try:
        return at.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before the year 1 in UTC
        raise ValueError(f"{text!r} is outside the calendar once in UTC") from None


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to; `everything` must be said explicitly."""

    task_ids: frozenset[str] = frozenset()
    message_ids: frozenset[str] = frozenset()
    task_type: str | None = None
    error: str | None = None
    since: datetime | None = None
    everything: bool = False

    @property
    def is_empty(self) -> bool:
        """True when nothing was chosen: replay and purge refuse rather than take all."""
        return not (
            self.everything
            or self.task_ids
            or self.message_ids
            or self.task_type
            or self.error
            or self.since
        )

    def matches(self, letter: DeadLetter) -> bool:
        if self.task_ids and letter.task_id not in self.task_ids:
            return False
        if self.message_ids and self.message_ids.isdisjoint(letter.message_ids):
            return False
        if self.task_type and letter.task_type != self.task_type:
            return False
        if self.since and letter.dead_lettered_at < self.since:
            return False
        if self.error:
            needle = self.error.lower()
            haystack = f"{letter.error_type}\n{letter.error_message}".lower()
            if needle not in haystack:
                return False
        return True

    def describe(self) -> dict[str, Any]:
        """The filter as JSON, for audit records and API answers."""
        out: dict[str, Any] = {}
        if self.everything:
            out["all"] = True
        if self.task_ids:
            out["task_ids"] = sorted(self.task_ids)
        if self.message_ids:
            out["message_ids"] = sorted(self.message_ids)
        for name in ("task_type", "error"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.since:
            out["since"] = self.since.isoformat()
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DeadLetterFilter:
        """Build from JSON or query arguments; ValueError says what is wrong."""

        def id_set(name: str) -> frozenset[str]:
            value = data.get(name)
            if value is None:
                return frozenset()
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a list of strings")
            return frozenset(value)

        def text(name: str) -> str | None:
            value = data.get(name)
            if value in (None, ""):
                return None
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            return value

        since = text("since")
        everything = data.get("all")
        if everything is None:
            everything = False
        elif not isinstance(everything, bool):
            # `all` empties the DLQ in one call: only an explicit JSON true may mean that.
            raise ValueError("all must be true or false (a JSON boolean)")
        return cls(
            task_ids=id_set("task_ids"),
            message_ids=id_set("message_ids"),
            task_type=text("task_type"),
            error=text("error"),
            since=parse_since(since) if since else None,
            everything=bool(everything),
        )


def merge_copies(letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """One dead letter per key, its copies attached: the worker's copy (it carries the reason)
    stands for the others, the oldest first."""
    groups: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        groups.setdefault(letter.key, []).append(letter)
    merged = []
    for group in groups.values():
        group.sort(key=lambda d: (not d.by_worker, d.dead_lettered_at, d.message_id))
        first = group[0]
        first.copies = group[1:]
        merged.append(first)
    return merged


def select(
    letters: Iterable[DeadLetter], flt: DeadLetterFilter, limit: int | None = None
) -> list[DeadLetter]:
    """The matching dead letters, oldest first, at most `limit` of them."""
    chosen = sorted(
        (letter for letter in letters if flt.matches(letter)),
        key=lambda d: (d.dead_lettered_at, d.message_id),
    )
    return chosen[:limit] if limit else chosen


def attach_status(
    letters: Iterable[DeadLetter], store: StatusStore, *, every: bool = False, threads: int = 16
) -> None:
    """Read the status record of each dead letter Pub/Sub dead-lettered (its last error), or
    of every dead letter with every=True.

    Such a task's record may still say running or retrying: Pub/Sub forwarded the message after
    its deliveries ran out (a crash loop, leases that kept expiring), and no worker saw it end.
    The first scan that finds the letter reconciles the record to dead_lettered, conditionally,
    so a record that moved on meanwhile is left alone.
    """
    wanted = [
        letter for letter in letters if (every or not letter.by_worker) and letter.status is None
    ]
    if not wanted:
        return

    def fetch(letter: DeadLetter) -> None:
        try:
            letter.status = store.get(letter.task_id)
            stuck = letter.status is not None and letter.status.state not in ENDED
            if stuck and not letter.by_worker:
                result = store.transition(
                    letter.task_id,
                    exhausted_by_pubsub(datetime.now(UTC), letter.reason["delivery_attempt"] or 0),
                )
                letter.status = result.record
        except Exception as exc:  # a record that cannot be read or reconciled now: next scan
            log.warning("status of %s not read: %s", letter.task_id, exc)

    with ThreadPoolExecutor(min(threads, len(wanted)), thread_name_prefix="dlq-status") as pool:
        list(pool.map(fetch, wanted))
