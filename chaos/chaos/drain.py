"""Waiting, after the faults stop, until every task the campaign knows of has ended (or
until the deadline, or until the tasks left have not changed for `stall_seconds`).

A tracked task has ended when its record is `succeeded` or `cancelled`, or `dead_lettered`
with the dead letter confirmed, in the life the campaign last replayed it to (a plain
replay published replay_count n: the record must reach life n). Records of tasks the API
did not accept (found in the bucket) must end too. A dead-lettered record whose DLQ publish
is still unconfirmed counts as ended once it has not changed for `settle_seconds`: the
worker finishes a pending dead letter on the message's next delivery, well within that,
and the checker reports one that stays pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from google.cloud import storage

from chaos.ledger import Ledger
from taskcore.status import STATUS_PREFIX, TERMINAL, StatusStore, StoredStatus, TaskState

log = logging.getLogger(__name__)

READ_THREADS = 16
POLL_SECONDS = 2.0
SETTLE_SECONDS = 30.0
# The drain gives up early once the tasks left have not changed at all for this long.
STALL_SECONDS = 60.0


@dataclass
class DrainResult:
    """How the drain went: whether everything ended, what did not, and how long it took."""

    ended: bool
    seconds: float
    unended: list[str] = field(default_factory=list)
    untracked_seen: int = 0
    stalled: bool = False


def has_ended(stored: StoredStatus | None, min_replay_count: int = 0) -> bool:
    """Whether a record is at an end the campaign can check (pending dead letters aside)."""
    if stored is None or stored.record.replay_count < min_replay_count:
        return False
    record = stored.record
    if record.state in TERMINAL:
        return True
    return (
        record.state == TaskState.DEAD_LETTERED
        and record.dead_letter is not None
        and not record.dead_letter.pending
    )


def is_pending_dead_letter(stored: StoredStatus | None) -> bool:
    return (
        stored is not None
        and stored.record.state == TaskState.DEAD_LETTERED
        and stored.record.dead_letter is not None
        and stored.record.dead_letter.pending
    )


class Drain:
    """Polls records until every known task has ended or the deadline passes."""

    def __init__(
        self,
        ledger: Ledger,
        bucket: storage.Bucket,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        stall_seconds: float = STALL_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.bucket = bucket
        self.store = StatusStore(bucket)
        self.settle_seconds = settle_seconds
        self.stall_seconds = stall_seconds
        self.poll_seconds = poll_seconds
        self.clock = clock
        # task id → (generation, when first seen) of a record stuck pending.
        self._pending_since: dict[str, tuple[int, float]] = {}

    def wait(self, timeout: float) -> DrainResult:
        started = self.clock()
        deadline = started + timeout
        done: set[str] = set()
        untracked: set[str] = set()
        # What the tasks left looked like (id, generation), and since when.
        still: tuple = ()
        still_since = started
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="drain") as pool:
            while True:
                tracked = self.ledger.tracked()
                known = set(tracked)
                scanned = known <= done
                if scanned:
                    # Every tracked task ended: now the tasks nobody accepted that ran.
                    untracked = self._untracked_names(known)
                    known |= untracked
                pending = sorted(known - done)
                stored = list(pool.map(self._read, pending))
                looks = []
                for task_id, found in zip(pending, stored, strict=True):
                    wanted = tracked[task_id].min_replay_count if task_id in tracked else 0
                    if has_ended(found, wanted) or self._settled(task_id, found):
                        done.add(task_id)
                    else:
                        looks.append((task_id, found.generation if found else None))
                remaining = sorted(known - done)
                if tuple(looks) != still:
                    still, still_since = tuple(looks), self.clock()
                elif remaining and self.clock() - still_since >= self.stall_seconds:
                    log.warning(
                        "drain: %d tasks unchanged for %gs", len(remaining), self.stall_seconds
                    )
                    return DrainResult(
                        False, self.clock() - started, remaining, len(untracked), stalled=True
                    )
                if not remaining and scanned:
                    return DrainResult(True, self.clock() - started, [], len(untracked))
                if not remaining:
                    continue  # scan for untracked records at once
                if self.clock() > deadline:
                    log.warning("drain: %d tasks not ended after %gs", len(remaining), timeout)
                    return DrainResult(False, self.clock() - started, remaining, len(untracked))
                log.info("drain: %d of %d tasks still to end", len(remaining), len(known))
                time.sleep(self.poll_seconds)

    def _read(self, task_id: str) -> StoredStatus | None:
        try:
            return self.store.read(task_id)
        except Exception as exc:  # read again next round
            log.debug("drain: record of %s not read: %s", task_id, exc)
            return None

    def _settled(self, task_id: str, stored: StoredStatus | None) -> bool:
        """A pending dead letter that has not changed for settle_seconds."""
        if not is_pending_dead_letter(stored):
            self._pending_since.pop(task_id, None)
            return False
        generation, since = self._pending_since.get(task_id, (None, None))
        if generation != stored.generation:
            self._pending_since[task_id] = (stored.generation, self.clock())
            return False
        return self.clock() - since >= self.settle_seconds

    def _untracked_names(self, tracked: set[str]) -> set[str]:
        names = (
            blob.name[len(STATUS_PREFIX) : -len(".json")]
            for blob in self.bucket.list_blobs(prefix=STATUS_PREFIX)
        )
        return {name for name in names if name not in tracked}
