"""What a worker tells the dispatcher: wake-ups, and how long messages waited.

Wake-ups: a message sent back with a backoff is due again when nothing may drain its queue.

Pub/Sub redelivers a returned message when its backoff ends, but only to a running
subscriber. The executions that returned it may all have exited by then (they stop once the
queue looks empty, and a message in backoff is invisible). So each return leaves a wake-up
for the dispatcher at the moment the message is due (taskcore.schedule): its tick then makes
sure an execution drains the queue.

One wake-up per queue and second is enough; this execution writes each second once.

Rechecks: an execution that worked and then found its queue empty leaves one more wake-up,
a lease later. A message can be leased and yet never seen: a pull whose answer was lost (a
timeout, a dropped stream) holds its messages for the ack deadline, and the executions that
could take them back may all have exited by then. The recheck starts one that will; it finds
the queue empty at worst, and an execution that received nothing leaves no recheck.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime

from taskcore.demand import LAG_REPORT_SECONDS, DemandStore
from taskcore.schedule import ScheduleStore

log = logging.getLogger(__name__)

# A message returned "now" is due a moment later: the wake-up must not come before it.
SETTLE_SECONDS = 1.0
# Rechecks are due on a multiple of this: executions ending together share one wake-up.
RECHECK_GRAIN_SECONDS = 10
# After the ack deadline, the lapsed lease must have made the message deliverable again.
RECHECK_MARGIN_SECONDS = 5.0


class LagReporter:
    """Reports, at most every LAG_REPORT_SECONDS, how long the messages just pulled waited."""

    def __init__(self, demand: DemandStore, queue: str, worker_task: str) -> None:
        self.demand = demand
        self.queue = queue
        self.worker_task = worker_task
        self._last = float("-inf")

    def pulled(self, received: list) -> None:
        now_mono = time.monotonic()
        if not received or now_mono - self._last < LAG_REPORT_SECONDS:
            return
        now = datetime.now(UTC)
        oldest = min(_published(message) or now for message in received)
        self._last = now_mono
        self.demand.report_lag(self.queue, self.worker_task, now, (now - oldest).total_seconds())


def _published(received) -> datetime | None:
    published = received.message.publish_time
    if not published:
        return None
    return published.astimezone(UTC) if published.tzinfo else published.replace(tzinfo=UTC)


class Wakeups:
    """Leaves one wake-up per due second for this execution's queue."""

    def __init__(self, schedule: ScheduleStore, queue: str) -> None:
        self.schedule = schedule
        self.queue = queue
        self._written: set[int] = set()
        self._lock = threading.Lock()

    def returned(self, seconds: float) -> None:
        """Messages were returned, due again in `seconds`."""
        due = math.ceil(datetime.now(UTC).timestamp() + max(seconds, SETTLE_SECONDS))
        with self._lock:
            if due in self._written:
                return
            self._written.add(due)
        self.schedule.add_wakeup(datetime.fromtimestamp(due, UTC), self.queue)

    def recheck(self, ack_deadline_seconds: float) -> None:
        """This execution worked and found its queue empty: look again once every lease a
        lost pull may hold has lapsed (one wake-up per queue and RECHECK_GRAIN_SECONDS)."""
        at = datetime.now(UTC).timestamp() + ack_deadline_seconds + RECHECK_MARGIN_SECONDS
        due = math.ceil(at / RECHECK_GRAIN_SECONDS) * RECHECK_GRAIN_SECONDS
        try:
            self.schedule.add_wakeup(datetime.fromtimestamp(due, UTC), self.queue)
        except Exception as exc:  # the safety-net execution picks the work up then
            log.warning("recheck not asked for: %s", exc)
            return
        with self._lock:
            self._written.add(due)

    def replace_me(self, task_name: str) -> None:
        """This worker task stops with work maybe left: ask for one to take its place now."""
        due = datetime.fromtimestamp(math.ceil(datetime.now(UTC).timestamp()), UTC)
        try:
            self.schedule.add_wakeup(due, self.queue, replaces=task_name)
        except Exception as exc:  # the safety-net execution picks the work up then
            log.warning("replacement not asked for: %s", exc)

    def due_times(self) -> list[datetime]:
        """The wake-ups this execution left (for its summary and tests)."""
        with self._lock:
            return [datetime.fromtimestamp(s, UTC) for s in sorted(self._written)]


__all__ = ["Wakeups"]
