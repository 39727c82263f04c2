"""Whether Cloud Storage answers: the worker pulls nothing while it does not.

Every message pulled and handed back counts as a Pub/Sub delivery. During a storage outage a
worker that kept pulling would spend the delivery attempts of tasks it could not even start,
and enough outages would send healthy tasks to the dead-letter topic. So the execution checks
storage before its first pull, and again before pulling on after a storage failure.
"""

from __future__ import annotations

import logging
import threading
import time

from google.cloud import storage

log = logging.getLogger(__name__)

# Any object: a missing one answers 404, which proves storage is serving. Reading an object
# needs only storage.objects.get, which the worker has anyway (a bucket get would not).
PROBE_OBJECT = "health/worker-probe"
PROBE_TIMEOUT_SECONDS = 5.0


class StorageGate:
    """Probes the bucket until it answers, for at most `patience_seconds`."""

    def __init__(
        self, bucket: storage.Bucket, patience_seconds: float, shutdown: threading.Event
    ) -> None:
        self.bucket = bucket
        self.patience_seconds = patience_seconds
        self.shutdown = shutdown
        self.probes = 0

    def probe(self) -> bool:
        """Whether storage answered one request just now."""
        self.probes += 1
        try:
            self.bucket.blob(PROBE_OBJECT).exists(timeout=PROBE_TIMEOUT_SECONDS, retry=None)
        except Exception as exc:
            log.warning("storage probe failed: %s: %s", type(exc).__name__, str(exc)[:200])
            return False
        return True

    def wait_until_up(self) -> bool:
        """True once storage answers (or a shutdown is asked for); False when patience ran out."""
        deadline = time.monotonic() + self.patience_seconds
        delay = 0.25
        while not self.shutdown.is_set():
            if self.probe():
                return True
            if time.monotonic() >= deadline:
                return False
            self.shutdown.wait(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)
        return True
