"""Browsing the DLQ subscription without consuming it.

Pub/Sub has no peek. A `DlqScan` pulls every message and holds its lease (renewed in the
background with modify_ack_deadline), so Pub/Sub does not hand the same message out again
while the scan goes on; it still dedupes by message id, keeping the newest ack id, in case
a lease lapsed. The scan ends once pulls have come back empty for a quiet window: by then it
holds every message the subscription had, however many pulls that took. What the caller
does not ack (replay, purge) is released with ack deadline 0 on close, so it is deliverable
again at once: browsing consumes nothing, and a crash mid-scan only delays the messages
until their leases run out. While a scan holds messages, another scan sees none of them.

A scan hands out one dead letter per death (`merge_copies`): copies a crashed worker
published twice are one letter, and acking or releasing it does so to every copy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.api_core import retry as api_retry
from google.cloud import pubsub_v1

from taskcore.clients import subscriber_client
from taskcore.dlq.letters import (
    DeadLetter,
    DeadLetterFilter,
    attach_status,
    merge_copies,
    select,
)
from taskcore.settings import Settings
from taskcore.status import StatusStore

log = logging.getLogger(__name__)

# Ack and modack requests carry at most this many ids (well inside Pub/Sub's 512 KB cap).
MAX_IDS_PER_CALL = 1000
# How long one ack call is retried, whatever it fails with, before its letters are given up on.
ACK_PATIENCE_SECONDS = 30.0
_RETRY = api_retry.Retry(
    initial=0.1,
    maximum=2.0,
    timeout=30.0,
    predicate=api_retry.if_exception_type(
        gexc.ServiceUnavailable, gexc.InternalServerError, gexc.Aborted, gexc.Unknown
    ),
)


@dataclass
class ScanStats:
    """How a scan went: pulls, messages seen, redeliveries absorbed by the dedupe, and copies
    of a dead letter merged into it."""

    pulls: int = 0
    received: int = 0
    redelivered: int = 0
    copies: int = 0
    seconds: float = 0.0


class DlqScan:
    """Holds the leases of every DLQ message it pulled until they are acked or released."""

    def __init__(
        self,
        settings: Settings,
        subscriber: pubsub_v1.SubscriberClient | None = None,
        *,
        lease_seconds: int = 60,
        quiet_seconds: float = 1.0,
        pull_size: int = 1000,
    ) -> None:
        self.settings = settings
        self.subscription = settings.dlq_subscription_path
        self._own_client = subscriber is None
        self.subscriber = subscriber or subscriber_client(settings)
        self.lease_seconds = lease_seconds
        self.quiet_seconds = quiet_seconds
        self.pull_size = pull_size
        self.stats = ScanStats()
        self._held: dict[str, DeadLetter] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def __enter__(self) -> DlqScan:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def scan(self) -> list[DeadLetter]:
        """Pull until the subscription has been empty for the quiet window; every dead letter
        once, its copies attached."""
        started = time.monotonic()
        self._start_keeper()
        last_message = time.monotonic()
        while True:
            received = self._pull()
            self.stats.pulls += 1
            now = time.monotonic()
            if received:
                last_message = now
                self._hold(received)
            elif now - last_message >= self.quiet_seconds:
                break
            else:
                time.sleep(0.02)
        self.stats.seconds = time.monotonic() - started
        with self._lock:
            letters = merge_copies(self._held.values())
        self.stats.copies = sum(len(letter.copies) for letter in letters)
        return letters

    def _pull(self) -> list:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": self.pull_size},
                timeout=max(1.0, self.quiet_seconds),
                retry=_RETRY,
            )
        except gexc.DeadlineExceeded:
            return []  # an empty long poll
        return list(response.received_messages)

    def _hold(self, received: list) -> None:
        with self._lock:
            for item in received:
                self.stats.received += 1
                known = self._held.get(item.message.message_id)
                if known is not None:
                    # A lapsed lease came back: the newest ack id is the one that still works.
                    known.ack_id = item.ack_id
                    self.stats.redelivered += 1
                else:
                    letter = DeadLetter.from_received(item)
                    self._held[letter.message_id] = letter

    def _start_keeper(self) -> None:
        if self._keeper is None:
            self._keeper = threading.Thread(
                target=self._keep_leases, name="dlq-leases", daemon=True
            )
            self._keeper.start()

    def _keep_leases(self) -> None:
        # Renew well before expiry: a third of the lease leaves two tries if one call fails;
        # a failed round is tried again within a second. Nothing ends this thread but stop.
        wait = self.lease_seconds / 3
        while not self._stop.wait(wait):
            try:
                with self._lock:
                    ack_ids = [letter.ack_id for letter in self._held.values()]
                renewed = self._modify(ack_ids, self.lease_seconds)
            except Exception:
                log.exception("DLQ lease renewal round failed")
                renewed = False
            wait = self.lease_seconds / 3 if renewed else 1.0

    def ack(self, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        """Remove these dead letters (every copy) from the DLQ; returns those not all acked.

        Each call is retried for up to ACK_PATIENCE_SECONDS, whatever it fails with. A message
        whose ack never got through stays held, and is handed back to the DLQ on close.
        """
        letters = list(letters)
        messages = [message for letter in letters for message in letter.messages]
        self._release_hold(messages)
        failed: set[str] = set()
        for start in range(0, len(messages), MAX_IDS_PER_CALL):
            chunk = messages[start : start + MAX_IDS_PER_CALL]
            if not self._acknowledge([message.ack_id for message in chunk]):
                failed.update(message.message_id for message in chunk)
                with self._lock:
                    for message in chunk:
                        self._held[message.message_id] = message
        return [letter for letter in letters if not failed.isdisjoint(letter.message_ids)]

    def _acknowledge(self, ack_ids: list[str]) -> bool:
        deadline = time.monotonic() + ACK_PATIENCE_SECONDS
        delay = 0.2
        while True:
            try:
                self.subscriber.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": ack_ids},
                    retry=_RETRY,
                    timeout=10.0,
                )
                return True
            except Exception as exc:  # RetryError included: it is no GoogleAPICallError
                if time.monotonic() + delay >= deadline:
                    log.warning("ack of %d dead letters failed: %s", len(ack_ids), exc)
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def release(self, letters: Iterable[DeadLetter] | None = None) -> int:
        """Give these (every copy; default: all still held) back to the DLQ at once, untouched."""
        if letters is None:
            with self._lock:
                messages = list(self._held.values())
        else:
            messages = [message for letter in letters for message in letter.messages]
        ack_ids = self._release_hold(messages)
        self._modify(ack_ids, 0)
        return len(ack_ids)

    def _release_hold(self, messages: Iterable[DeadLetter]) -> list[str]:
        with self._lock:
            return [
                self._held.pop(message.message_id).ack_id
                for message in messages
                if message.message_id in self._held
            ]

    def _modify(self, ack_ids: list[str], seconds: int) -> bool:
        """Set the ack deadline of these messages; False if any call failed."""
        sent = True
        for start in range(0, len(ack_ids), MAX_IDS_PER_CALL):
            try:
                self.subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": ack_ids[start : start + MAX_IDS_PER_CALL],
                        "ack_deadline_seconds": seconds,
                    },
                    retry=_RETRY,
                    timeout=30.0,
                )
            except Exception as exc:
                # Not fatal either way: a missed extension means a redelivery the dedupe
                # absorbs, a missed release means the message returns when its lease ends.
                log.warning("modify_ack_deadline(%ds) failed: %s", seconds, exc)
                sent = False
        return sent

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def close(self) -> None:
        """Release every message still held and stop renewing leases; safe to call twice."""
        self._stop.set()
        try:
            self.release()
        finally:
            if self._keeper is not None:
                self._keeper.join(timeout=5)
            if self._own_client:
                self.subscriber.close()
                self._own_client = False


@dataclass
class Listing:
    """The result of a browse: how many dead letters the DLQ holds (copies of one counted
    once), how many matched, and (up to a limit) which."""

    total: int
    matched_count: int
    shown: list[DeadLetter] = field(default_factory=list)
    stats: ScanStats = field(default_factory=ScanStats)


def browse(
    settings: Settings,
    flt: DeadLetterFilter,
    *,
    store: StatusStore | None = None,
    limit: int | None = None,
    subscriber: pubsub_v1.SubscriberClient | None = None,
) -> Listing:
    """Scan the DLQ, pick what matches, and give every message back untouched."""
    with DlqScan(settings, subscriber) as scan:
        letters = scan.scan()
        if store is not None:
            attach_status(letters, store)
        matched = select(letters, flt)
        return Listing(
            total=len(letters),
            matched_count=len(matched),
            shown=matched[:limit] if limit else matched,
            stats=scan.stats,
        )
