"""What the dispatcher and the worker tell each other about a queue, through the bucket.

Pub/Sub cannot say "this subscription has messages and nobody pulls them", and its backlog
metric lags by minutes, so the two sides keep two small objects per queue:

- `dispatch/<queue>.json`, the **decision lease**: written conditionally (generation match)
  by the one dispatcher that decides for the queue in a cooldown, it also carries
  `demand_at`, the latest moment tasks were accepted for the queue that no execution is
  known to have seen yet, and `arrivals`, the tasks accepted in each ARRIVAL_BUCKET_SECONDS
  of the last ARRIVAL_WINDOW_SECONDS, from every dispatcher (the backlog estimate);
- `dispatch/<queue>.drained.json`: written by a worker execution that stops because the
  subscription stayed empty, with `empty_since`, the start of its last empty pull.

- `dispatch/<queue>.lag/<worker task>.json`: written by a busy worker task at most every
  LAG_REPORT_SECONDS, with the age of the oldest message it just pulled (how long tasks
  wait in the queue). By Little's law the backlog is about the arrival rate times that
  wait, which is what executions are sized for when the queue falls behind.

Demand at D is *covered* once an execution was created at or after D (it pulls after the
message was published), or once a worker found the subscription empty after D (the message
was taken). Demand that is not covered while nothing runs starts an execution: this closes
the race where the last running execution was already idling out when a task arrived.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from google.api_core import exceptions as gexc
from google.cloud import storage

DISPATCH_PREFIX = "dispatch/"
# Arrivals are counted per 10 s and remembered for a minute: the backlog a queue's executions
# are sized for is what arrived in the last minute (see dispatcher.policy).
ARRIVAL_BUCKET_SECONDS = 10
ARRIVAL_WINDOW_SECONDS = 60
# A busy worker task reports its queue's wait this often; the dispatcher trusts reports this
# recent, and removes those much older.
LAG_REPORT_SECONDS = 10
LAG_FRESH_SECONDS = 30
LAG_FORGET_SECONDS = 600


def lease_name(queue: str) -> str:
    return f"{DISPATCH_PREFIX}{queue}.json"


def drained_name(queue: str) -> str:
    return f"{DISPATCH_PREFIX}{queue}.drained.json"


def lag_prefix(queue: str) -> str:
    return f"{DISPATCH_PREFIX}{queue}.lag/"


def _time(value) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class QueueLease:
    """The decision lease of one queue as read: who may decide, and the uncovered demand."""

    generation: int
    until: datetime | None
    demand_at: datetime | None
    arrivals: dict[int, int] = field(default_factory=dict)

    def held(self, now: datetime) -> bool:
        return self.until is not None and self.until > now

    def arrivals_with(self, count: int, now: datetime) -> dict[int, int]:
        """The arrival counts of the window ending now, with `count` more arrived now."""
        current = int(now.timestamp()) // ARRIVAL_BUCKET_SECONDS * ARRIVAL_BUCKET_SECONDS
        oldest = current - ARRIVAL_WINDOW_SECONDS + ARRIVAL_BUCKET_SECONDS
        kept = {start: n for start, n in self.arrivals.items() if start >= oldest}
        if count:
            kept[current] = kept.get(current, 0) + count
        return kept


class DemandStore:
    """The dispatch/ objects of the pipeline's bucket."""

    def __init__(self, bucket: storage.Bucket, retry=None) -> None:
        self.bucket = bucket
        self._call = {} if retry is None else {"retry": retry}

    def read_lease(self, queue: str) -> QueueLease:
        blob = self.bucket.blob(lease_name(queue))
        try:
            body = json.loads(blob.download_as_bytes(**self._call))
        except gexc.NotFound:
            return QueueLease(0, None, None)
        except ValueError:
            body = {}  # unreadable: taken over like an expired lease
        arrivals = body.get("arrivals") if isinstance(body.get("arrivals"), dict) else {}
        return QueueLease(
            int(blob.generation),
            _time(body.get("until")),
            _time(body.get("demand_at")),
            {int(start): int(n) for start, n in arrivals.items()},
        )

    def write_lease(
        self,
        queue: str,
        read: QueueLease,
        until: datetime,
        demand_at: datetime | None,
        arrivals: dict[int, int],
    ) -> bool:
        """Take the lease until `until` with this demand; False if another wrote first."""
        body = {
            "until": until.isoformat(),
            "demand_at": demand_at.isoformat() if demand_at else None,
            "arrivals": {str(start): n for start, n in sorted(arrivals.items())},
        }
        try:
            self.bucket.blob(lease_name(queue)).upload_from_string(
                json.dumps(body),
                content_type="application/json",
                if_generation_match=read.generation,
                **self._call,
            )
        except gexc.PreconditionFailed:
            return False
        return True

    def mark_drained(self, queue: str, empty_since: datetime) -> None:
        """A worker found the queue empty from `empty_since` on (best effort)."""
        with contextlib.suppress(gexc.GoogleAPIError):
            self.bucket.blob(drained_name(queue)).upload_from_string(
                json.dumps({"empty_since": empty_since.isoformat()}),
                content_type="application/json",
                **self._call,
            )

    def drained_since(self, queue: str) -> datetime | None:
        """When a worker last found the queue empty (the start of that empty pull)."""
        try:
            body = json.loads(self.bucket.blob(drained_name(queue)).download_as_bytes(**self._call))
        except (gexc.NotFound, ValueError):
            return None
        return _time(body.get("empty_since"))

    def report_lag(self, queue: str, worker_task: str, at: datetime, wait_seconds: float) -> None:
        """A worker task just pulled a message that had waited `wait_seconds` (best effort)."""
        with contextlib.suppress(gexc.GoogleAPIError):
            self.bucket.blob(f"{lag_prefix(queue)}{worker_task}.json").upload_from_string(
                json.dumps({"at": at.isoformat(), "wait_seconds": round(wait_seconds, 3)}),
                content_type="application/json",
                **self._call,
            )

    def queue_wait(self, queue: str, now: datetime) -> float:
        """The longest wait fresh reports give for `queue` (0: none; the queue keeps up).

        Reports are one per worker task; stale ones are removed on the way.
        """
        longest = 0.0
        for blob in self.bucket.list_blobs(prefix=lag_prefix(queue), **self._call):
            try:
                body = json.loads(blob.download_as_bytes(**self._call))
                at = datetime.fromisoformat(body["at"])
            except (gexc.NotFound, ValueError, KeyError):
                continue
            age = (now - at).total_seconds()
            if age > LAG_FORGET_SECONDS:
                with contextlib.suppress(gexc.NotFound):
                    blob.delete(**self._call)
            elif age <= LAG_FRESH_SECONDS:
                longest = max(longest, float(body.get("wait_seconds", 0)))
        return longest


def covered(
    demand_at: datetime | None,
    execution_created: list[datetime],
    drained_since: datetime | None,
    clock_margin: timedelta = timedelta(seconds=1),
) -> bool:
    """Whether demand at `demand_at` has been seen by some execution (see the module doc).

    clock_margin absorbs skew between the clock that stamped the demand (an API instance)
    and those that stamp executions and the drained mark: a doubt starts one execution more.
    """
    if demand_at is None:
        return True
    after = demand_at + clock_margin
    if any(created >= after for created in execution_created):
        return True
    return drained_since is not None and drained_since >= after
