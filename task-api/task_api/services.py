"""What the routes share within one app: settings, the task registry and the Google clients.

Clients are created on first use, once per process, and reused by every request thread:
a PublisherClient per request would open a gRPC channel and a batching thread each time.
Nothing is created when the app is built, so gunicorn forks before any channel exists.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flask import current_app
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY

from dispatcher.jobs import JobsGateway
from dispatcher.service import Dispatcher
from dispatcher.trigger import DispatchTrigger
from task_api.admin_sessions import AdminSessions
from task_api.idempotency import IdempotencyStore
from task_api.queued_records import QueuedRecords
from task_api.readiness import READY_TIMEOUT_SECONDS, TopicProbe
from task_api.sign_in_throttle import SignInThrottle
from task_api.status_sink import status_sink
from taskcore.backlog import BacklogReader
from taskcore.clients import storage_client
from taskcore.journal import Journal, ProcessJournal, writer_name
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import StatusStore
from taskcore.tasks import TaskRegistry

EXTENSION_KEY = "task_api"
# A queued record is written on the request's time, before the 202: brief retries only (the
# worker writes its own record anyway).
STATUS_WRITE_RETRY_SECONDS = 2.0


def status_write_retry():
    """The GCS retry of queued-record writes: short, they are on the request path."""
    return DEFAULT_RETRY.with_timeout(STATUS_WRITE_RETRY_SECONDS)


class LazyClients:
    """The API's publisher and bucket, built on first use under a lock and then shared."""

    def __init__(self, settings: Settings, *, publisher: Any = None, storage: Any = None) -> None:
        self.settings = settings
        # Re-entrant: the bucket factory asks for the storage client under the same lock.
        self._lock = threading.RLock()
        self._publisher = publisher
        self._storage = storage
        self._bucket: gcs.Bucket | None = None

    def _once(self, attribute: str, factory: Callable[[], Any]) -> Any:
        # Double-checked: the hot path reads an attribute; only the first callers take the lock.
        value = getattr(self, attribute)
        if value is None:
            with self._lock:
                value = getattr(self, attribute)
                if value is None:
                    value = factory()
                    setattr(self, attribute, value)
        return value

    @property
    def publisher(self) -> Publisher:
        """The shared task publisher (anything with publish_task(envelope) -> message id)."""
        return self._once("_publisher", lambda: Publisher(self.settings))

    @property
    def storage(self) -> gcs.Client:
        """The shared Cloud Storage client."""
        return self._once("_storage", lambda: storage_client(self.settings))

    @property
    def bucket(self) -> gcs.Bucket:
        """The pipeline's bucket on the shared client (no request is made)."""
        return self._once("_bucket", lambda: self.storage.bucket(self.settings.bucket_name))

    def check_topic(self) -> None:
        """Raise PublishError unless the task topic answers within READY_TIMEOUT_SECONDS."""
        check = getattr(self.publisher, "check_topic", None)
        if check is not None:  # a test's fake publisher may have no topic to check
            check(READY_TIMEOUT_SECONDS)

    def close(self) -> None:
        """Flush and stop the publisher if one was created; safe to call twice."""
        with self._lock:
            publisher, self._publisher = self._publisher, None
        close = getattr(publisher, "close", None)
        if close is not None:
            close()


class ReadPool:
    """Threads for parallel storage reads, made on first use in the serving process."""

    THREADS = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid: int | None = None

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="admin-read")
                self._pid = os.getpid()
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class ApiServices:
    """Everything a request handler needs besides the request itself."""

    settings: Settings
    registry: TaskRegistry
    clients: LazyClients
    queued_records: QueuedRecords
    idempotency: IdempotencyStore
    readiness: TopicProbe
    admin_sessions: AdminSessions
    sign_in_throttle: SignInThrottle
    trigger: DispatchTrigger
    journal: ProcessJournal
    # The dashboard's reads: record pages in parallel, and the subscriptions' backlog.
    reads: ReadPool
    backlog: BacklogReader

    @classmethod
    def build(cls, settings: Settings, registry: TaskRegistry, clients: LazyClients) -> ApiServices:
        """Services on these clients; nothing connects until first use."""
        journal = ProcessJournal(lambda: Journal(clients.bucket, writer_name("api")))
        return cls(
            settings=settings,
            registry=registry,
            clients=clients,
            queued_records=QueuedRecords(
                lambda: status_sink(clients.storage, clients.bucket, status_write_retry()),
                on_written=journal.written,
            ),
            idempotency=IdempotencyStore(
                lambda: clients.bucket, publish_timeout=settings.publish_timeout_seconds
            ),
            readiness=TopicProbe(clients.check_topic),
            admin_sessions=AdminSessions(lambda: clients.bucket),
            sign_in_throttle=SignInThrottle(),
            trigger=DispatchTrigger(
                lambda: Dispatcher(
                    settings,
                    registry,
                    clients.bucket,
                    clients.publisher,
                    JobsGateway(settings) if settings.dispatch_enabled else None,
                    on_written=journal.written,
                ),
                settings.dispatch_cooldown_seconds,
            ),
            journal=journal,
            reads=ReadPool(),
            backlog=BacklogReader(settings),
        )

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher of this process (delayed and periodic tasks; executions on demand)."""
        return self.trigger.dispatcher

    @property
    def status_store(self) -> StatusStore:
        """Status records on the shared bucket, with the client's default retry."""
        return StatusStore(self.clients.bucket, on_written=self.journal.written)

    def accepted(self, queues: Iterable[str]) -> None:
        """Tasks were queued: let the dispatcher start executions for their queues."""
        if not self.settings.dispatch_enabled:
            return
        for queue, count in Counter(queues).items():
            self.trigger.poke(queue, count)

    def close(self) -> None:
        """Stop the record writers and the dispatcher, flush the journal, then flush and stop
        the publisher."""
        self.queued_records.close()
        self.trigger.close()
        self.journal.close()
        self.reads.close()
        self.clients.close()


def services() -> ApiServices:
    """The current app's services (inside a request or app context)."""
    return current_app.extensions[EXTENSION_KEY]
