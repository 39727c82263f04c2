"""The records the broker keeps: messages, subscriptions, leases, open streams and snapshots."""

from __future__ import annotations

import threading
from collections import deque

from devstack.emulators.pubsub.wire import Snapshot, Subscription


class Msg:
    """A published message, serialized once (id and publish time set) and shared by subscriptions."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float) -> None:
        self.data = data
        self.ts = ts


class Stream:
    """One StreamingPull call: its ack deadline and the client's flow-control window."""

    __slots__ = (
        "sub",
        "deadline",
        "max_messages",
        "max_bytes",
        "count",
        "bytes",
        "closed",
        "error",
    )

    def __init__(self, sub: Sub, deadline: int, max_messages: int, max_bytes: int) -> None:
        self.sub = sub
        self.deadline = deadline
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.count = 0
        self.bytes = 0
        self.closed = False
        self.error = None

    def has_room(self) -> bool:
        """Whether flow control lets one more message out."""
        return (not self.max_messages or self.count < self.max_messages) and (
            not self.max_bytes or self.bytes < self.max_bytes
        )


class Lease:
    """A delivered, not yet acknowledged message: when it expires and who holds it."""

    __slots__ = ("msg", "attempts", "deadline", "stream")

    def __init__(self, msg: Msg, attempts: int, deadline: float, stream: Stream | None) -> None:
        self.msg = msg
        self.attempts = attempts
        self.deadline = deadline
        self.stream = stream


class Sub:
    """A subscription: its settings and the messages it still owes its subscribers."""

    __slots__ = (
        "name",
        "config",
        "cond",
        "pending",
        "leases",
        "acked",
        "deleted",
        "ack_prefix",
        "project",
        "short_name",
        "ack_deadline",
        "retention",
        "retain_acked",
        "dlq_topic",
        "max_attempts",
        "min_backoff",
        "max_backoff",
        "has_retry",
    )

    def __init__(self, config: Subscription, lock: threading.Lock) -> None:
        self.name = config.name
        self.cond = threading.Condition(lock)
        # (Msg, deliveries so far) in delivery order; redeliveries go to the front.
        self.pending: deque[tuple[Msg, int]] = deque()
        self.leases: dict[int, Lease] = {}
        # Acknowledged messages kept for Seek when retain_acked_messages is set.
        self.acked: deque[tuple[Msg, int]] = deque()
        self.deleted = False
        self.ack_prefix = (self.name + ":").encode()
        _, self.project, _, self.short_name = self.name.split("/", 3)
        self.configure(config)

    def configure(self, config: Subscription) -> None:
        """Take new settings; derived numbers are cached to keep delivery cheap."""
        self.config = config
        self.ack_deadline = config.ack_deadline_seconds
        self.retention = config.message_retention_duration.ToTimedelta().total_seconds()
        self.retain_acked = config.retain_acked_messages
        if not self.retain_acked:
            self.acked.clear()
        has_dlq = config.HasField("dead_letter_policy")
        self.dlq_topic = config.dead_letter_policy.dead_letter_topic if has_dlq else ""
        self.max_attempts = config.dead_letter_policy.max_delivery_attempts if has_dlq else 0
        self.has_retry = config.HasField("retry_policy")
        policy = config.retry_policy
        self.min_backoff = policy.minimum_backoff.ToTimedelta().total_seconds()
        self.max_backoff = policy.maximum_backoff.ToTimedelta().total_seconds()

    def backoff(self, attempts: int) -> float:
        """Seconds before a nacked or expired message may go out again."""
        if not self.has_retry:
            return 0.0
        delay = self.min_backoff * (2 ** max(attempts - 1, 0)) if self.min_backoff else 0.0
        return min(max(delay, self.min_backoff), self.max_backoff)


class Snap:
    """A snapshot: what its subscription had not acknowledged when it was taken, plus every
    message its topic got since, until it expires."""

    __slots__ = ("name", "config", "messages", "expires", "attached")

    def __init__(self, config: Snapshot, messages: deque, expires: float) -> None:
        self.name = config.name
        self.config = config
        # (Msg, deliveries so far), oldest first.
        self.messages: deque[tuple[Msg, int]] = messages
        self.expires = expires
        # False once its topic was deleted: a topic made again under that name is another
        # topic, whose messages the snapshot does not get and whose subscriptions cannot seek
        # to it.
        self.attached = True
