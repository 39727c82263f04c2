"""The transition journal and per-writer stats: what the dashboard reads instead of every record.

Status records (status/<task_id>.json) are the truth about each task, but listing them is
O(all tasks ever). So every process that writes records (each worker execution, each API
process) also keeps, through StatusStore's on_written hook:

- **the journal**: one entry per record it wrote (task_id, task_type, queue, state, at,
  attempt, error_type), buffered and flushed every FLUSH_SECONDS (and on close) into one
  create-only object `journal/<inverted minute>/<writer>-<seq>.jsonl`. The minute is
  inverted (9999999999 - epoch minute, zero-padded) so that Cloud Storage's ascending
  listing is newest first: the dashboard pages through the newest objects only;
- **its stats**: `stats/<inverted hour>/<writer>.json`, overwritten at each flush that has
  news: state changes by minute over the last WINDOW_MINUTES (queued, running, succeeded,
  retrying, dead_lettered, cancelled), the tasks it runs right now, and a heartbeat. The
  overview sums the stats of the writers of the last two hours: a few dozen small objects.

A crash loses at most the entries and counts of the last FLUSH_SECONDS; the records
themselves are written before their entries, so a task is always readable by id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from taskcore.status import TaskState, TaskStatus

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal/"
STATS_PREFIX = "stats/"
FLUSH_SECONDS = 10.0
# Stats keep this many minutes of counts; the overview charts the same hour.
WINDOW_MINUTES = 60
# A flush is written at once when this many entries wait (bounds object size and memory).
FLUSH_BATCH = 5_000
# While storage is down entries wait; past this many the oldest are dropped (and counted).
MAX_BUFFERED = 200_000
# Names are inverted against this so that the newest sort first.
_INVERT = 9_999_999_999
WRITE_TIMEOUT_SECONDS = 10.0
WRITE_RETRY = DEFAULT_RETRY.with_timeout(WRITE_TIMEOUT_SECONDS)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def inverted(number: int) -> str:
    """9999999999 - number, zero-padded: later minutes (or hours) sort first."""
    return f"{_INVERT - number:010d}"


def uninverted(text: str) -> int:
    """The minute (or hour) an inverted name part stands for."""
    return _INVERT - int(text)


def epoch_minute(when: datetime | float) -> int:
    seconds = when.timestamp() if isinstance(when, datetime) else when
    return int(seconds // 60)


def journal_group(minute: int) -> str:
    """The prefix holding the journal objects flushed during minute (epoch minutes)."""
    return f"{JOURNAL_PREFIX}{inverted(minute)}/"


def stats_group(hour: int) -> str:
    """The prefix holding the stats objects written during hour (epoch hours)."""
    return f"{STATS_PREFIX}{inverted(hour)}/"


def writer_name(kind: str, label: str | None = None) -> str:
    """A writer id unique to this process: kind, what it is (host, execution), pid, random."""
    parts = [kind, label or socket.gethostname(), str(os.getpid()), uuid.uuid4().hex[:6]]
    return _UNSAFE.sub("_", "-".join(parts))[:120]


@dataclass(frozen=True)
class JournalEntry:
    """One written status record, as the journal keeps it."""

    task_id: str
    task_type: str
    queue: str
    state: str
    at: datetime
    attempt: int = 0
    error_type: str | None = None

    @classmethod
    def of(cls, record: TaskStatus) -> JournalEntry:
        error = record.last_error.type if record.last_error else None
        return cls(
            task_id=record.task_id,
            task_type=record.task_type,
            queue=record.queue,
            state=str(record.state),
            at=record.updated_at,
            attempt=record.attempts,
            error_type=error,
        )

    def to_json(self) -> str:
        fields = asdict(self)
        fields["at"] = self.at.isoformat()
        return json.dumps({k: v for k, v in fields.items() if v is not None})

    @classmethod
    def from_json(cls, line: str) -> JournalEntry:
        fields = json.loads(line)
        fields["at"] = datetime.fromisoformat(fields["at"])
        return cls(**fields)

    @property
    def key(self) -> tuple[datetime, str]:
        """Newest-first order: by time, then task id."""
        return self.at, self.task_id


def entries_of(data: bytes) -> list[JournalEntry]:
    """The entries of one journal object; a line that cannot be read is skipped."""
    entries = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            entries.append(JournalEntry.from_json(line))
        except (ValueError, TypeError, KeyError):
            continue
    return entries


class Journal:
    """This process's journal and stats: call written() after each status write; flushes itself.

    Safe from any thread. start() runs the flush loop; close() stops it and flushes the rest.
    """

    def __init__(
        self,
        bucket: storage.Bucket,
        writer: str,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.time,
        retry=None,
    ) -> None:
        self.bucket = bucket
        self.writer = writer
        self.flush_seconds = flush_seconds
        self._clock = clock
        # Bounded: the journal is an index, and a flush must never hold a closing process
        # long (an execution ends, an API process has seconds to stop).
        self._call = {"retry": retry or WRITE_RETRY, "timeout": WRITE_TIMEOUT_SECONDS}
        self._lock = threading.Lock()
        # Serialises flushes (the loop, a full buffer, close) so objects go out in order.
        self._flushing = threading.Lock()
        self._entries: deque[JournalEntry] = deque()
        self._seq = 0
        self._minutes: dict[int, Counter[str]] = {}
        self._running: set[str] = set()
        self._stats_changed = False
        self._started_at = clock()
        self.dropped = 0
        self.flush_failures = 0
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- recording ---------------------------------------------------------------------------

    def written(self, record: TaskStatus, before: TaskStatus | None = None) -> None:
        """StatusStore's on_written hook: record was just written over `before` (None: new)."""
        entry = JournalEntry.of(record)
        changed = before is None or before.state != record.state
        with self._lock:
            self._entries.append(entry)
            self._drop_oldest_beyond_limit()
            if changed:
                minute = epoch_minute(record.updated_at)
                self._minutes.setdefault(minute, Counter())[entry.state] += 1
                self._stats_changed = True
            if record.state == TaskState.RUNNING:
                self._stats_changed |= record.task_id not in self._running
                self._running.add(record.task_id)
            elif record.task_id in self._running:
                self._running.discard(record.task_id)
                self._stats_changed = True
            full = len(self._entries) >= FLUSH_BATCH
        if full:
            self._wake()

    def _drop_oldest_beyond_limit(self) -> None:
        while len(self._entries) > MAX_BUFFERED:
            self._entries.popleft()
            self.dropped += 1

    # --- flushing ----------------------------------------------------------------------------

    def start(self) -> Journal:
        """Flush every flush_seconds in a daemon thread until close()."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"journal-{self.writer}", daemon=True
            )
            self._thread.start()
        return self

    def _wake(self) -> None:
        if self._thread is None:
            self.flush()
        else:
            self._wakeup.set()

    def _loop(self) -> None:
        while not self._closed:
            self._wakeup.wait(self.flush_seconds)
            self._wakeup.clear()
            if self._closed:
                return  # close() flushes the rest itself
            try:
                self.flush()
            except Exception:  # never let the loop die: the next round tries again
                log.exception("journal flush failed")

    def flush(self, *, closing: bool = False) -> None:
        """Write the waiting entries as one journal object, then this writer's stats."""
        with self._flushing:
            with self._lock:
                entries, self._entries = self._entries, deque()
            if entries:
                now = self._clock()
                name = f"{journal_group(epoch_minute(now))}{self.writer}-{self._seq:06d}.jsonl"
                self._seq += 1
                if not self._write_entries(name, entries):
                    with self._lock:  # back in front of what arrived meanwhile, in order
                        self._entries.extendleft(reversed(entries))
                        self._drop_oldest_beyond_limit()
                    return  # the stats wait with them: counts never run ahead of entries
            self._write_stats(closing)

    def _write_entries(self, name: str, entries: Iterable[JournalEntry]) -> bool:
        try:
            self.bucket.blob(name).upload_from_string(
                journal_lines(entries),
                content_type="application/x-ndjson",
                if_generation_match=0,
                **self._call,
            )
        except gexc.PreconditionFailed:
            pass  # an earlier try landed and only its answer was lost: the name is ours alone
        except Exception as exc:
            self.flush_failures += 1
            log.warning(
                "journal flush failed; %d entries wait for the next one: %s",
                len(entries),
                exc,
                extra={"json_fields": {"journal_writer": self.writer}},
            )
            return False
        return True

    def _write_stats(self, closing: bool) -> None:
        with self._lock:
            if not (self._stats_changed or self._running or closing):
                return  # idle: nothing new to say, and no gauge to keep alive
            now = self._clock()
            horizon = epoch_minute(now) - WINDOW_MINUTES
            for minute in [m for m in self._minutes if m <= horizon]:
                del self._minutes[minute]
            body = {
                "writer": self.writer,
                "kind": self.writer.split("-", 1)[0],
                "started_at": _iso(self._started_at),
                "heartbeat": _iso(now),
                "flush_seconds": self.flush_seconds,
                "closed": closing,
                "in_flight": 0 if closing else len(self._running),
                "minutes": {str(m): dict(c) for m, c in sorted(self._minutes.items())},
            }
            self._stats_changed = False
        name = f"{stats_group(int(now // 3600))}{self.writer}.json"
        try:
            self.bucket.blob(name).upload_from_string(
                json.dumps(body, separators=(",", ":")),
                content_type="application/json",
                **self._call,
            )
        except Exception as exc:
            with self._lock:
                self._stats_changed = True
            log.warning("writer stats not written: %s", exc)

    def close(self) -> None:
        """Stop the flush loop and write what is left (entries, final stats)."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=self.flush_seconds + 5)
        self.flush(closing=True)


class ProcessJournal:
    """A Journal made on first use in the current process (gunicorn forks after create_app)."""

    def __init__(self, factory: Callable[[], Journal]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._journal: Journal | None = None
        self._pid: int | None = None

    def get(self) -> Journal:
        if self._journal is None or self._pid != os.getpid():
            with self._lock:
                if self._journal is None or self._pid != os.getpid():
                    self._journal = self._factory().start()
                    self._pid = os.getpid()
        return self._journal

    def written(self, record: TaskStatus, before: TaskStatus | None = None) -> None:
        self.get().written(record, before)

    def close(self) -> None:
        with self._lock:
            journal, self._journal = self._journal, None
        if journal is not None and self._pid == os.getpid():
            journal.close()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def journal_lines(entries: Iterable[JournalEntry]) -> bytes:
    """Entries as a journal object's content (one JSON line each)."""
    return "".join(entry.to_json() + "\n" for entry in entries).encode()
