"""Writing `queued` status records after the response, from a bounded queue.

A synchronous GCS write per submit would cap the API at the bucket's write latency (about
150 req/s per process), so the submit route only enqueues the record; a background thread per
process writes it create-only. The queue is bounded: when GCS cannot keep up, records are
dropped and counted (a request never waits for a record), and the worker's own `running`
record replaces a dropped `queued` one soon after. Records are written only for tasks whose
publish Pub/Sub confirmed, because only those are enqueued.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable

from task_api.status_sink import StatusSink
from taskcore.status import TaskStatus

log = logging.getLogger(__name__)

# One thread writes several hundred records/s per process, more than a process serves; a
# second only competed with the request threads for the GIL (bench/api.py: fewer req/s).
DEFAULT_THREADS = 1
# Log the first drop, then one line per this many, so an overload does not flood the logs.
DROP_LOG_EVERY = 1000

_STOP = object()


class StatusWriter:
    """Background create-only writer of status records, started on first use in each process."""

    def __init__(
        self,
        store_factory: Callable[[], StatusSink],
        *,
        capacity: int,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self._store_factory = store_factory
        self._capacity = capacity
        self._threads_wanted = threads
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._threads: list[threading.Thread] = []
        self._pid: int | None = None
        # Records accepted but not yet written, so GET /tasks/<id> can answer in between.
        self._pending: dict[str, TaskStatus] = {}
        self.written = 0
        self.dropped = 0
        self.failed = 0

    def submit(self, status: TaskStatus) -> bool:
        """Enqueue a record to write create-only; False (and a log line) if the queue is full."""
        self._ensure_started()
        self._pending[status.task_id] = status
        try:
            self._queue.put_nowait(status)
        except queue.Full:
            self._pending.pop(status.task_id, None)
            self.dropped += 1
            if self.dropped % DROP_LOG_EVERY == 1:
                log.warning(
                    "status record queue full; dropping queued records",
                    extra={
                        "json_fields": {
                            "task_id": status.task_id,
                            "dropped_total": self.dropped,
                            "capacity": self._capacity,
                        }
                    },
                )
            return False
        return True

    def pending(self, task_id: str) -> TaskStatus | None:
        """The record for task_id if it is still waiting to be written by this process."""
        return self._pending.get(task_id)

    def backlog(self) -> int:
        """Records waiting in the queue."""
        return self._queue.qsize()

    def flush(self, timeout: float) -> bool:
        """Wait until every enqueued record was written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._alive():
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to timeout), then stop the threads; safe to call twice."""
        with self._lock:
            if self._pid != os.getpid() or not self._threads:
                return  # never started here (or started before a fork): nothing of ours runs
            threads = list(self._threads)
            deadline = time.monotonic() + timeout
            self.flush(timeout)
            for _ in threads:
                try:
                    self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
                except queue.Full:
                    break
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            # A later submit (a test reusing the app) starts fresh threads.
            self._threads, self._pid = [], None
        left = self._queue.qsize()
        if left:
            log.warning(
                "status writer stopped with records unwritten",
                extra={"json_fields": {"unwritten": left}},
            )

    def _alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _ensure_started(self) -> None:
        # Started lazily, in the process that serves requests: gunicorn forks its workers
        # after create_app(), and threads do not survive a fork.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._threads = [
                threading.Thread(target=self._run, name=f"status-writer-{i}", daemon=True)
                for i in range(self._threads_wanted)
            ]
            for thread in self._threads:
                thread.start()
            _register_atexit(self)

    def _run(self) -> None:
        store = self._store_factory()
        while True:
            status = self._queue.get()
            try:
                if status is _STOP:
                    return
                self._write(store, status)
            finally:
                self._queue.task_done()

    def _write(self, store: StatusSink, status: TaskStatus) -> None:
        try:
            # Create-only: if the worker already wrote running/succeeded, that record stays.
            store.create(status)
            self.written += 1
        except Exception as exc:
            self.failed += 1
            log.warning(
                "queued status record not written",
                extra={
                    "json_fields": {"task_id": status.task_id, "error_type": type(exc).__name__}
                },
            )
        finally:
            self._pending.pop(status.task_id, None)


_writers: weakref.WeakSet[StatusWriter] = weakref.WeakSet()
_atexit_registered = False


def _register_atexit(writer: StatusWriter) -> None:
    # A backstop for servers that exit without gunicorn's worker_exit hook (the dev server,
    # tests); gunicorn workers close their writer in that hook first.
    global _atexit_registered
    _writers.add(writer)
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_close_all)


def _close_all() -> None:
    for writer in list(_writers):
        writer.close(timeout=5.0)
