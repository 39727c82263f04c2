"""The `queued` status record of each accepted task, written before its 202 is sent.

A client that was told "queued" can read the task at GET /tasks/<id> at once, under any load:
the record exists when the answer leaves (a batch writes its records in parallel). The write
is create-only, so a worker that was quicker keeps its own record. If storage fails, the
task is still queued (Pub/Sub has it) and the worker writes its record when it runs it; the
failure is logged and counted, never turned into an error for a task that was accepted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from task_api.status_sink import StatusSink
from taskcore.status import OnWritten, TaskStatus

log = logging.getLogger(__name__)

# Writes of one batch's records run this many at a time.
BATCH_WRITERS = 16


class QueuedRecords:
    """Writes queued records synchronously, on the request's own time."""

    def __init__(
        self, sink_factory: Callable[[], StatusSink], on_written: OnWritten | None = None
    ) -> None:
        self._sink_factory = sink_factory
        # The transition journal: told of each record this process created.
        self._on_written = on_written
        self._sink: StatusSink | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.written = 0
        self.failed = 0

    def _ready(self) -> StatusSink:
        # Made in the serving process on first use: gunicorn forks after create_app().
        if self._sink is None:
            with self._lock:
                if self._sink is None:
                    self._pool = ThreadPoolExecutor(BATCH_WRITERS, thread_name_prefix="queued")
                    self._sink = self._sink_factory()
        return self._sink

    def write(self, records: Sequence[TaskStatus]) -> None:
        """Create each record (in parallel for a batch); failures are logged, not raised."""
        sink = self._ready()
        if len(records) == 1:
            self._write_one(sink, records[0])
            return
        list(self._pool.map(lambda record: self._write_one(sink, record), records))

    def _write_one(self, sink: StatusSink, record: TaskStatus) -> None:
        try:
            created = sink.create(record)
            self.written += 1
        except Exception as exc:
            self.failed += 1
            log.warning(
                "queued status record not written; the worker will write its own",
                extra={
                    "json_fields": {"task_id": record.task_id, "error_type": type(exc).__name__}
                },
            )
            return
        if created and self._on_written is not None:
            self._on_written(record, None)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
