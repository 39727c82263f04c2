"""Lease extension: messages being worked on are not redelivered while they run."""

from __future__ import annotations

import logging
import threading
import time

from background_worker.acks import Settler

log = logging.getLogger(__name__)


class LeaseKeeper:
    """A thread that keeps extending the ack deadline of in-flight messages until each is settled
    or passes its own lease limit (its time limit plus a margin)."""

    def __init__(self, settler: Settler, ack_deadline_seconds: int) -> None:
        self.settler = settler
        self.ack_deadline_seconds = ack_deadline_seconds
        # Renew well before expiry: at 40% of the deadline there are two chances left.
        self.interval = max(0.5, ack_deadline_seconds * 0.4)
        self._leases: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> LeaseKeeper:
        """Start renewing in the background."""
        self._thread.start()
        return self

    def hold(self, ack_id: str, until: float) -> None:
        """Keep ack_id leased until monotonic time `until` or until released."""
        with self._lock:
            self._leases[ack_id] = until

    def release(self, ack_id: str) -> None:
        """Stop extending ack_id (it was acked or nacked)."""
        with self._lock:
            self._leases.pop(ack_id, None)

    def held(self) -> list[str]:
        """Ack ids currently leased."""
        with self._lock:
            return list(self._leases)

    def stop(self) -> None:
        """Stop the renewal thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                expired = [a for a, until in self._leases.items() if until <= now]
                for ack_id in expired:
                    del self._leases[ack_id]
                live = list(self._leases)
            if expired:
                log.warning(
                    "%d tasks passed their lease limit; letting their leases lapse", len(expired)
                )
            if live:
                self.settler.extend(live, self.ack_deadline_seconds)
