"""Things that must happen later: delayed tasks to publish, and queues to wake up.

Each is one create-only object `scheduled/<due, epoch ms>-<kind>-<key>.json`, so listing the
prefix (GCS lists in name order) yields them earliest first and a tick reads only what is due:

- a **delayed task** (POST /submit-task with delay_seconds or run_at): the message to publish,
  which the dispatcher's tick publishes once due, never before; it survives any restart, and
  a cancelled task (its record `cancelled`) is dropped instead;
- a **wake-up**: a worker that sent a failed task back with a backoff leaves one for the
  moment it is due, so the dispatcher starts an execution then even if every execution has
  exited meanwhile (Pub/Sub cannot say "this message is due now").

Handling an item twice publishes a task twice, which the worker absorbs (one task id, one
effect); removing it only after it was handled means a crash never loses one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import storage

log = logging.getLogger(__name__)

SCHEDULED_PREFIX = "scheduled/"
TASK = "task"
WAKEUP = "wakeup"


def _millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class ScheduledItem:
    """One thing to do at `due`: publish a task's message, or wake a queue."""

    name: str
    kind: str
    due: datetime
    queue: str
    task_id: str | None = None
    data: bytes | None = None
    attributes: dict[str, str] | None = None
    replaces: str | None = None


def item_name(due: datetime, kind: str, key: str) -> str:
    return f"{SCHEDULED_PREFIX}{_millis(due):013d}-{kind}-{key}.json"


class ScheduleStore:
    """Delayed tasks and wake-ups in the pipeline's bucket."""

    def __init__(self, bucket: storage.Bucket, retry=None) -> None:
        self.bucket = bucket
        self._call = {} if retry is None else {"retry": retry}

    def add_task(self, due: datetime, queue: str, task_id: str, data: bytes, attributes) -> str:
        """Keep a task's message until `due` (create-only: adding it twice keeps one)."""
        body = {
            "kind": TASK,
            "due": due.isoformat(),
            "queue": queue,
            "task_id": task_id,
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": dict(attributes),
        }
        return self._create(item_name(due, TASK, task_id), body)

    def add_wakeup(self, due: datetime, queue: str, *, replaces: str | None = None) -> str:
        """Ask for `queue` to be drained at `due` (one per queue and second is plenty).

        replaces: a worker task that stopped before the queue was empty (its run budget
        ran out, or it was told to stop) asks for a task to take its place, named by this.
        """
        due = due.replace(microsecond=0)
        body = {"kind": WAKEUP, "due": due.isoformat(), "queue": queue, "replaces": replaces}
        key = queue if replaces is None else f"{queue}.{replaces}"
        return self._create(item_name(due, WAKEUP, key), body)

    def _create(self, name: str, body: dict) -> str:
        with contextlib.suppress(gexc.PreconditionFailed):  # the same item, added already
            self.bucket.blob(name).upload_from_string(
                json.dumps(body),
                content_type="application/json",
                if_generation_match=0,
                **self._call,
            )
        return name

    def due(self, now: datetime | None = None, limit: int = 500) -> list[ScheduledItem]:
        """The items due by `now`, earliest first (listing stops at the first not yet due)."""
        cutoff = f"{SCHEDULED_PREFIX}{_millis(now or datetime.now(UTC)):013d}."
        items = []
        for blob in self.bucket.list_blobs(prefix=SCHEDULED_PREFIX, **self._call):
            if blob.name > cutoff or len(items) >= limit:
                break
            item = self._load(blob.name)
            if item is not None:
                items.append(item)
        return items

    def next_due(self) -> datetime | None:
        """When the earliest item is due, if there is one."""
        for blob in self.bucket.list_blobs(prefix=SCHEDULED_PREFIX, max_results=1, **self._call):
            millis = blob.name[len(SCHEDULED_PREFIX) :].split("-", 1)[0]
            return datetime.fromtimestamp(int(millis) / 1000, UTC)
        return None

    def _load(self, name: str) -> ScheduledItem | None:
        try:
            body = json.loads(self.bucket.blob(name).download_as_bytes(**self._call))
        except gexc.NotFound:
            return None  # handled meanwhile by another tick
        except ValueError:
            log.warning("unreadable scheduled item %s: dropped", name)
            self.remove(name)
            return None
        return ScheduledItem(
            name=name,
            kind=body.get("kind", ""),
            due=datetime.fromisoformat(body["due"]),
            queue=body.get("queue", "default"),
            task_id=body.get("task_id"),
            data=base64.b64decode(body["data"]) if body.get("data") else None,
            attributes=body.get("attributes"),
            replaces=body.get("replaces"),
        )

    def remove(self, name: str) -> None:
        with contextlib.suppress(gexc.NotFound):
            self.bucket.blob(name).delete(**self._call)
