"""The one place where messages are acked, nacked and their leases extended."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from google.api_core import exceptions as gexc
from google.api_core import retry as api_retry
from google.cloud import pubsub_v1

log = logging.getLogger(__name__)

# Ack/modack calls retry briefly: a lost ack only means a redelivery, which the
# idempotent outputs absorb, so it must never stall the worker for long.
_SETTLE_RETRY = api_retry.Retry(
    initial=0.1,
    maximum=1.0,
    timeout=10.0,
    predicate=api_retry.if_exception_type(
        gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted
    ),
)
MAX_IDS_PER_CALL = 1000


class Settler:
    """Acks, nacks and lease extensions for one subscription, each message settled once.

    Acks are sent in batches by a background thread (every ACK_FLUSH_SECONDS, or sooner
    when ACK_BATCH are waiting): one RPC for many messages instead of one each. An ack is
    only queued once the message's outcome is durable, so a crash before the flush means a
    redelivery that finds the task done, never a lost task.
    """

    ACK_FLUSH_SECONDS = 0.05
    ACK_BATCH = 500

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription_path: str) -> None:
        self.subscriber = subscriber
        self.subscription_path = subscription_path
        self._settled: set[str] = set()
        self._lock = threading.Lock()
        self._pending_acks: list[str] = []
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="ack-flusher", daemon=True)
        self._flusher.start()

    def _claim(self, ack_id: str) -> bool:
        with self._lock:
            if ack_id in self._settled:
                return False
            self._settled.add(ack_id)
            return True

    def ack(self, ack_id: str) -> bool:
        """Acknowledge a message whose outcome is durable (outputs or dead letter written)."""
        with self._lock:
            if ack_id in self._settled:
                return False
            self._settled.add(ack_id)
            self._pending_acks.append(ack_id)
            if len(self._pending_acks) >= self.ACK_BATCH:
                self._wake.notify()
        return True

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                if not self._closed:
                    self._wake.wait(self.ACK_FLUSH_SECONDS)
                batch, self._pending_acks = self._pending_acks, []
                closed = self._closed
            self._send_acks(batch)
            if closed:
                return

    def _send_acks(self, ack_ids: list[str]) -> None:
        for start in range(0, len(ack_ids), MAX_IDS_PER_CALL):
            chunk = ack_ids[start : start + MAX_IDS_PER_CALL]
            try:
                self.subscriber.acknowledge(
                    request={"subscription": self.subscription_path, "ack_ids": chunk},
                    retry=_SETTLE_RETRY,
                    timeout=10.0,
                )
            except gexc.GoogleAPICallError as exc:
                log.warning(
                    "ack of %d messages failed; they will be redelivered and found done: %s",
                    len(chunk),
                    exc,
                )

    def close(self) -> None:
        """Send the acks still queued and stop the flusher."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._flusher.join(timeout=15)

    def nack(self, ack_ids: Iterable[str]) -> int:
        """Return messages to the subscription now (ack deadline 0) instead of at lease expiry."""
        ids = [a for a in ack_ids if self._claim(a)]
        for start in range(0, len(ids), MAX_IDS_PER_CALL):
            self._modify(ids[start : start + MAX_IDS_PER_CALL], 0)
        return len(ids)

    def extend(self, ack_ids: Iterable[str], seconds: int) -> None:
        """Extend the leases of messages still being worked on."""
        with self._lock:
            ids = [a for a in ack_ids if a not in self._settled]
        for start in range(0, len(ids), MAX_IDS_PER_CALL):
            self._modify(ids[start : start + MAX_IDS_PER_CALL], seconds)

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        if not ack_ids:
            return
        try:
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription_path,
                    "ack_ids": ack_ids,
                    "ack_deadline_seconds": seconds,
                },
                retry=_SETTLE_RETRY,
                timeout=10.0,
            )
        except gexc.GoogleAPICallError as exc:
            log.warning(
                "modify_ack_deadline(%ds) failed for %d messages: %s", seconds, len(ack_ids), exc
            )
