"""The one place where messages are acked, returned (now or after a backoff) and leased.

Every call to Pub/Sub from here can fail, for a moment or for minutes. None of these
failures may end a thread or lose a settlement:

- an ack is queued once the message's outcome is durable, and a background thread sends it
  in batches; a batch that fails goes back to the queue and is tried again until it is sent
  or the execution ends. Until then the message is still leased (`unsent_acks()`; the lease
  keeper keeps extending it), so a succeeded task is not redelivered for want of an ack;
- returning a message (ack deadline 0, or a backoff delay: our retry policy) that fails is
  tried again in the background; if it never gets through, the lease simply runs out;
- the background thread survives any exception, RetryError included (google-api-core raises
  it when its own retry gives up, and it is not a GoogleAPICallError).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from google.api_core import exceptions as gexc
from google.api_core import retry as api_retry
from google.cloud import pubsub_v1

log = logging.getLogger(__name__)

# Each call retries briefly; the background thread retries batches for as long as it takes.
_CALL_RETRY = api_retry.Retry(
    initial=0.1,
    maximum=1.0,
    timeout=5.0,
    predicate=api_retry.if_exception_type(
        gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.Aborted
    ),
)
CALL_TIMEOUT_SECONDS = 5.0
MAX_IDS_PER_CALL = 1000
# Pub/Sub's longest ack deadline: the longest a message can be held back by one call.
MAX_DEADLINE_SECONDS = 600


class Settler:
    """Acks, returns and lease extensions for one subscription, each message settled once."""

    FLUSH_SECONDS = 0.05
    ACK_BATCH = 500
    # Backoff between attempts to resend what failed to send.
    RESEND_MIN_SECONDS = 0.2
    RESEND_MAX_SECONDS = 5.0

    def __init__(
        self,
        subscriber: pubsub_v1.SubscriberClient,
        subscription_path: str,
        on_return: Callable[[float], None] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.subscription_path = subscription_path
        # Told when messages go back to the queue, and in how long they are due again (the
        # worker leaves a wake-up for the dispatcher: no execution may be running by then).
        self._on_return = on_return
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._settled: set[str] = set()
        self._acks: list[str] = []  # queued, not yet sent
        self._sending: set[str] = set()  # in a call right now
        self._returns: dict[str, int] = {}  # ack id → deadline seconds still to send
        self._closed = False
        self._close_timeout = 15.0
        self._resend_after = 0.0
        self._resend_delay = self.RESEND_MIN_SECONDS
        self.acks_sent = 0
        self.send_failures = 0
        self._sender = threading.Thread(target=self._send_loop, name="settler", daemon=True)
        self._sender.start()

    # --- what the rest of the worker calls -------------------------------------------------

    def ack(self, ack_id: str) -> bool:
        """Acknowledge a message whose outcome is durable (outputs or dead letter written)."""
        with self._lock:
            if ack_id in self._settled:
                return False
            self._settled.add(ack_id)
            self._acks.append(ack_id)
            if len(self._acks) >= self.ACK_BATCH:
                self._wake.notify()
        return True

    def nack(self, ack_ids: Iterable[str]) -> int:
        """Return messages now (ack deadline 0) instead of at lease expiry."""
        returned = self._return(ack_ids, 0)
        if returned:
            self._returned(0)
        return returned

    def delay(self, ack_id: str, seconds: float) -> bool:
        """Return a message after `seconds` (the retry backoff): it stays leased until then."""
        seconds = int(max(0, min(MAX_DEADLINE_SECONDS, round(seconds))))
        returned = self._return([ack_id], seconds) == 1
        if returned:
            self._returned(seconds)
        return returned

    def _returned(self, seconds: float) -> None:
        if self._on_return is not None:
            try:
                self._on_return(seconds)
            except Exception as exc:  # a wake-up is a hint; the message is returned anyway
                log.warning("wake-up not left: %s", _short(exc))

    def extend(self, ack_ids: Iterable[str], seconds: int) -> bool:
        """Extend the leases of messages still being worked on; False if the call failed."""
        with self._lock:
            ids = [a for a in ack_ids if a not in self._settled or a in self._unsent_locked()]
        try:
            self._modify(ids, seconds)
        except Exception as exc:  # the lease keeper tries again soon
            log.warning("lease extension of %d messages failed: %s", len(ids), _short(exc))
            return False
        return True

    def unsent_acks(self) -> set[str]:
        """Messages acked here but not yet confirmed by Pub/Sub: their leases must be kept."""
        with self._lock:
            return self._unsent_locked()

    def is_settled(self, ack_id: str) -> bool:
        with self._lock:
            return ack_id in self._settled

    def close(self, timeout: float = 15.0) -> int:
        """Send what is still queued (retrying up to timeout), then stop; returns what was not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            self._close_timeout = timeout
            self._resend_after = 0.0
            self._wake.notify()
        self._sender.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        with self._lock:
            left = len(self._acks) + len(self._sending)
        if left:
            log.warning(
                "%d acks were not sent; those messages will be redelivered and found done", left
            )
        return left

    # --- the background sender ---------------------------------------------------------------

    def _unsent_locked(self) -> set[str]:
        return set(self._acks) | self._sending

    def _return(self, ack_ids: Iterable[str], seconds: int) -> int:
        with self._lock:
            ids = [a for a in ack_ids if a not in self._settled]
            self._settled.update(ids)
        if not ids:
            return 0
        try:
            self._modify(ids, seconds)
        except Exception as exc:
            log.warning("returning %d messages failed, will retry: %s", len(ids), _short(exc))
            with self._lock:
                for ack_id in ids:
                    self._returns[ack_id] = seconds
                self._wake.notify()
        return len(ids)

    def _send_loop(self) -> None:
        close_deadline: float | None = None
        while True:
            try:
                done, close_deadline = self._send_round(close_deadline)
            except Exception:  # a bug here must not end the thread: acks would stop for good
                log.exception("settler round failed")
                done = False
                time.sleep(self.RESEND_MIN_SECONDS)
            if done:
                return

    def _send_round(self, close_deadline: float | None) -> tuple[bool, float | None]:
        """Send what is queued once; (whether the thread may end, the close deadline)."""
        with self._lock:
            if not self._closed:
                self._wake.wait(self.FLUSH_SECONDS)
            closed = self._closed
            if closed and close_deadline is None:
                close_deadline = time.monotonic() + self._close_timeout
            if not closed and time.monotonic() < self._resend_after:
                return False, close_deadline
            acks, self._acks = self._acks, []
            returns, self._returns = self._returns, {}
            self._sending.update(acks)
        failed = self._send(acks, returns)
        with self._lock:
            self._sending.difference_update(acks)
            if failed:
                self.send_failures += 1
                self._acks = failed[0] + self._acks
                for ack_id, seconds in failed[1].items():
                    self._returns.setdefault(ack_id, seconds)
                self._resend_after = time.monotonic() + self._resend_delay
                self._resend_delay = min(self._resend_delay * 2, self.RESEND_MAX_SECONDS)
            else:
                self._resend_delay = self.RESEND_MIN_SECONDS
            nothing_left = not self._acks and not self._returns
        if not closed:
            return False, close_deadline
        if nothing_left or time.monotonic() >= close_deadline:
            return True, close_deadline
        if failed:
            time.sleep(min(self._resend_delay, 1.0, max(0.0, close_deadline - time.monotonic())))
        return False, close_deadline

    def _send(
        self, acks: list[str], returns: dict[str, int]
    ) -> tuple[list[str], dict[str, int]] | None:
        """Send acks and returns; what failed, to try again (None when everything went)."""
        failed_acks: list[str] = []
        failed_returns: dict[str, int] = {}
        for start in range(0, len(acks), MAX_IDS_PER_CALL):
            chunk = acks[start : start + MAX_IDS_PER_CALL]
            try:
                self.subscriber.acknowledge(
                    request={"subscription": self.subscription_path, "ack_ids": chunk},
                    retry=_CALL_RETRY,
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                self.acks_sent += len(chunk)
            except Exception as exc:  # whatever it is, the acks are kept and sent again
                log.warning("ack of %d messages failed, will retry: %s", len(chunk), _short(exc))
                failed_acks.extend(chunk)
        by_deadline: dict[int, list[str]] = {}
        for ack_id, seconds in returns.items():
            by_deadline.setdefault(seconds, []).append(ack_id)
        for seconds, ids in by_deadline.items():
            try:
                self._modify(ids, seconds)
            except Exception as exc:
                log.warning("returning %d messages failed, will retry: %s", len(ids), _short(exc))
                failed_returns.update(dict.fromkeys(ids, seconds))
        if failed_acks or failed_returns:
            return failed_acks, failed_returns
        return None

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        for start in range(0, len(ack_ids), MAX_IDS_PER_CALL):
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription_path,
                    "ack_ids": ack_ids[start : start + MAX_IDS_PER_CALL],
                    "ack_deadline_seconds": seconds,
                },
                retry=_CALL_RETRY,
                timeout=CALL_TIMEOUT_SECONDS,
            )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
