"""Recent tasks and the last hour's activity, read from the journal and the writers' stats.

Both cost O(page), whatever the history (taskcore.journal writes what they read):

- `TaskIndex.page()` lists journal objects newest first, keeps each task's newest entry,
  optionally of one state, and reads the current record of each task it shows (in
  parallel): the page shows the records' truth, ordered by their last journaled change.
  A task is shown only once its newest entry is certain: entries of minute m can only be
  in journal objects of minute m or later, so after reading every object down to minute
  m, every task changed since the start of m is settled. Further pages continue below a
  cursor (time, task id); a page that reads more than max_objects journal objects stops
  early and says how far back it looked.
- `TaskIndex.activity()` sums the stats objects of the writers of the last two hours: state
  changes per minute for the last WINDOW_MINUTES, and the tasks running now.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby

from google.api_core import exceptions as gexc
from google.cloud import storage

from taskcore.journal import (
    JOURNAL_PREFIX,
    WINDOW_MINUTES,
    JournalEntry,
    entries_of,
    epoch_minute,
    journal_group,
    stats_group,
    uninverted,
)
from taskcore.status import TaskState, TaskStatus

# Entries reach the journal up to a flush interval (plus a slow write) after they happened,
# so a later page starts reading this many minutes above its cursor to see them.
LAG_MINUTES = 2
# Journal objects one page may read before it answers with what it has.
MAX_OBJECTS = 120
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)
_FAR_PAST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PageCursor:
    """Where the next page starts: below this (time, task id), newest first."""

    at: datetime
    task_id: str = ""

    @property
    def key(self) -> tuple[datetime, str]:
        return self.at, self.task_id

    def encode(self) -> str:
        text = json.dumps([self.at.isoformat(), self.task_id])
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> PageCursor:
        """The cursor a page handed out; ValueError for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            at, task_id = json.loads(raw)
            when = datetime.fromisoformat(at)
        except (ValueError, TypeError) as exc:
            raise ValueError("not a cursor this API handed out") from exc
        if when.tzinfo is None or not isinstance(task_id, str):
            raise ValueError("not a cursor this API handed out")
        return cls(when, task_id)


@dataclass
class TaskPage:
    """One page of recent tasks, newest change first."""

    tasks: list[TaskStatus]
    next_cursor: PageCursor | None
    # How far back the journal was read: a short page with a cursor searched only this far.
    scanned_to: datetime | None
    journal_objects: int


@dataclass
class Activity:
    """The last hour, summed over every writer's stats."""

    minutes: list[tuple[datetime, dict[str, int]]]
    running_now: int
    writers: int
    live_writers: int

    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for _, counts in self.minutes:
            total.update(counts)
        return {state.value: total.get(state.value, 0) for state in TaskState}


@dataclass
class _Scan:
    """Reads journal groups (one minute's objects each) newest first, within a budget."""

    groups: Iterator[tuple[int, list[str]]]
    budget: int
    # The budget binds only once the scan is below this (the cursor's time): every page
    # gets further than the last, however many late entries sit above the cursor.
    floor: datetime = _FAR_FUTURE
    objects: int = 0
    # Every task changed at or after this time has its newest entry among those read.
    settled_since: datetime = _FAR_FUTURE
    reached: datetime | None = None
    exhausted: bool = False
    entries: list[JournalEntry] = field(default_factory=list)


class TaskIndex:
    """Pages of recent tasks and the hour's activity, over one bucket."""

    def __init__(
        self,
        bucket: storage.Bucket,
        read_record: Callable[[str], TaskStatus | None],
        pool: ThreadPoolExecutor,
        *,
        max_objects: int = MAX_OBJECTS,
        timeout: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.read_record = read_record
        self.pool = pool
        self.max_objects = max_objects
        self.timeout = timeout

    # --- recent tasks --------------------------------------------------------------------

    def page(
        self, *, state: TaskState | None = None, limit: int = 50, cursor: PageCursor | None = None
    ) -> TaskPage:
        """Up to `limit` tasks, newest change first (below cursor), optionally in `state`."""
        start = None if cursor is None else epoch_minute(cursor.at) + LAG_MINUTES
        scan = _Scan(self._groups(start), self.max_objects)
        if cursor is not None:
            scan.floor = cursor.at
        newest: dict[str, JournalEntry] = {}
        done: set[str] = set()  # shown, refused, or changed since the cursor
        shown: list[tuple[JournalEntry, TaskStatus]] = []
        while len(shown) < limit:
            for entry in scan.entries:
                if cursor is not None and entry.key >= cursor.key:
                    done.add(entry.task_id)
                elif entry.task_id not in newest or entry.key > newest[entry.task_id].key:
                    newest[entry.task_id] = entry
            scan.entries = []
            ready = sorted(
                (
                    e
                    for e in newest.values()
                    if e.at >= scan.settled_since
                    and e.task_id not in done
                    and (state is None or e.state == state)
                ),
                key=lambda e: e.key,
                reverse=True,
            )[: limit - len(shown)]
            if not ready:
                if not self._read_group(scan):
                    break
                continue
            done.update(e.task_id for e in ready)
            for entry, record in zip(ready, self._records(ready), strict=True):
                if _still_shown(record, state, cursor):
                    shown.append((entry, record))
        more = not scan.exhausted or any(
            e.task_id not in done and (state is None or e.state == state) for e in newest.values()
        )
        if len(shown) >= limit:
            next_cursor = PageCursor(*shown[-1][0].key) if more else None
        else:
            next_cursor = None if scan.exhausted else PageCursor(scan.settled_since)
        return TaskPage([r for _, r in shown], next_cursor, scan.reached, scan.objects)

    def _groups(self, start_minute: int | None) -> Iterator[tuple[int, list[str]]]:
        """(minute, object names) of each journal group, newest first, from start_minute down."""
        names = self.bucket.list_blobs(
            prefix=JOURNAL_PREFIX,
            start_offset=journal_group(start_minute) if start_minute is not None else None,
            fields="items(name),nextPageToken",
            page_size=200,
            timeout=self.timeout,
        )
        by_group = groupby((blob.name for blob in names), key=lambda n: n.split("/", 2)[1])
        for inverted_minute, group in by_group:
            try:
                minute = uninverted(inverted_minute)
            except ValueError:
                continue  # not a journal group
            yield minute, list(group)

    def _read_group(self, scan: _Scan) -> bool:
        """Read the next group into scan.entries; False once the journal or the budget ended."""
        if scan.exhausted or (scan.objects >= scan.budget and scan.settled_since < scan.floor):
            return False
        group = next(scan.groups, None)
        if group is None:
            scan.exhausted = True
            scan.settled_since = _FAR_PAST  # all read: every task's newest entry is known
            return True
        minute, names = group
        for data in self.pool.map(self._download, names):
            scan.entries.extend(entries_of(data))
        scan.objects += len(names)
        scan.settled_since = datetime.fromtimestamp(minute * 60, UTC)
        scan.reached = scan.settled_since
        return True

    def _download(self, name: str) -> bytes:
        try:
            return self.bucket.blob(name).download_as_bytes(timeout=self.timeout)
        except gexc.NotFound:
            return b""  # deleted by retention between the listing and the read

    def _records(self, entries: list[JournalEntry]) -> list[TaskStatus | None]:
        return list(self.pool.map(self.read_record, [e.task_id for e in entries]))

    # --- the hour's activity -------------------------------------------------------------

    def activity(self, now: datetime | None = None) -> Activity:
        """State changes per minute over the last WINDOW_MINUTES and the tasks running now."""
        now = now or datetime.now(UTC)
        hour = int(now.timestamp() // 3600)
        names = [
            blob.name
            for group in (stats_group(hour), stats_group(hour - 1))
            for blob in self.bucket.list_blobs(
                prefix=group, fields="items(name),nextPageToken", timeout=self.timeout
            )
        ]
        latest: dict[str, dict] = {}
        for body in self.pool.map(self._stats_body, names):
            writer = body.get("writer") if body else None
            if writer and body.get("heartbeat", "") > latest.get(writer, {}).get("heartbeat", ""):
                latest[writer] = body
        last = epoch_minute(now)
        window = range(last - WINDOW_MINUTES + 1, last + 1)
        counts: dict[int, Counter[str]] = {minute: Counter() for minute in window}
        running = live = 0
        for body in latest.values():
            for minute, by_state in body.get("minutes", {}).items():
                if int(minute) in counts:
                    counts[int(minute)].update(by_state)
            heartbeat = datetime.fromisoformat(body["heartbeat"])
            fresh = now - heartbeat <= timedelta(seconds=3 * float(body.get("flush_seconds", 10)))
            if fresh and not body.get("closed"):
                live += 1
                running += int(body.get("in_flight", 0))
        series = [(datetime.fromtimestamp(m * 60, UTC), dict(counts[m])) for m in window]
        return Activity(series, running, len(latest), live)

    def _stats_body(self, name: str) -> dict | None:
        try:
            return json.loads(self.bucket.blob(name).download_as_bytes(timeout=self.timeout))
        except (gexc.NotFound, ValueError):
            return None


def _still_shown(
    record: TaskStatus | None, state: TaskState | None, cursor: PageCursor | None
) -> bool:
    """Whether the record, as it is now, belongs on this page."""
    if record is None:
        return False  # deleted by retention: the journal outlived it
    if state is not None and record.state != state:
        return False  # moved on since its last journaled change
    # Changed since the cursor's page was made: it sorts above the cursor now.
    return cursor is None or (record.updated_at, record.task_id) < cursor.key
