"""Replaying dead letters: republish to the task topic, ack in the DLQ once confirmed.

A replay publishes the original data and attributes minus the dead-letter reason (the
worker's ERROR_ATTRIBUTES and Pub/Sub's CloudPubSubDeadLetter*), plus replay_count and
replayed_at, and keeps a task_id attribute. Copies of one dead letter (see
taskcore.deadletter) are replayed once: one publish, then every copy acked. A dead letter is
acked only after Pub/Sub has confirmed its publish, so a crash in between replays a task
twice (the worker's `succeeded` record turns the second run into a no-op) and never loses
one; Ctrl+C publishes nothing more, and whatever was not published stays in the DLQ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import pubsub_v1, storage

from taskcore.deadletter import ERROR_ATTRIBUTES, PUBSUB_DEAD_LETTER_PREFIX, REFRESH_ATTRIBUTES
from taskcore.dlq.audit import (
    Actor,
    DlqUsageError,
    OperationResult,
    count_copies,
    now,
    record_audit,
)
from taskcore.dlq.letters import DeadLetter, DeadLetterFilter, attach_status, select
from taskcore.dlq.scan import DlqScan
from taskcore.envelope import parse_message
from taskcore.errors import InvalidTaskError, TaskPipelineError
from taskcore.lifecycle import replaced_by
from taskcore.publishing import Publisher, check_attributes
from taskcore.settings import DEFAULT_QUEUE, Settings
from taskcore.status import StatusStore, TaskState
from taskcore.tasks import TaskRegistry, load_task_modules

log = logging.getLogger(__name__)

REPLAY_ATTRIBUTES = ("replay_count", "replayed_at")
PUBLISH_THREADS = 16
ACK_BATCH = 500
ACK_FLUSH_SECONDS = 0.5


class ReplayRefused(TaskPipelineError):
    """Raised when --set would make a selected task invalid (or break limits); nothing is published."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0]
        super().__init__(
            f"{len(problems)} selected task(s) cannot be replayed as asked, e.g. "
            f"{first['task_id']}: {first['error']}; nothing was replayed"
        )
        self.problems = problems


def parse_rate(text: str | float | None) -> float | None:
    """'10/s', '600/m', '10' (per second) → messages per second; None or 0 means no limit."""
    if text in (None, ""):
        return None
    if isinstance(text, int | float):
        value, per = float(text), 1.0
    else:
        number, _, unit = str(text).strip().partition("/")
        units = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
        if unit.strip().lower() not in units:
            raise ValueError(f"rate {text!r}: use N/s, N/m or N/h")
        try:
            value, per = float(number), units[unit.strip().lower()]
        except ValueError:
            raise ValueError(f"rate {text!r} is not a number per s, m or h") from None
    if value < 0:
        raise ValueError("rate must not be negative")
    return value / per if value else None


class RateLimiter:
    """Spaces calls 1/rate apart, without letting a slow stretch bank a burst."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next: float | None = None

    def wait(self, stop: threading.Event) -> bool:
        """Wait for the next slot; False if `stop` was set meanwhile."""
        if not self.interval:
            return not stop.is_set()
        now = time.monotonic()
        if self._next is None:
            self._next = now
        delay = self._next - now
        if delay > 0 and stop.wait(delay):
            return False
        # Keep the schedule through small delays; after a long stall start afresh from now.
        late = time.monotonic() - self._next
        self._next = (self._next if late < self.interval else time.monotonic()) + self.interval
        return not stop.is_set()


def replay_attributes(letter: DeadLetter, now: datetime) -> dict[str, str]:
    """The original attributes without the dead-letter reason, plus the replay's own."""
    kept = {
        key: value
        for key, value in letter.attributes.items()
        if key not in ERROR_ATTRIBUTES
        and key not in REPLAY_ATTRIBUTES
        and key not in REFRESH_ATTRIBUTES
        and not key.startswith(PUBSUB_DEAD_LETTER_PREFIX)
        # goog* keys are reserved: Pub/Sub refuses to have them published.
        and not key.startswith("goog")
    }
    # An id-less task keeps the id it is listed under, so replays of it share status/outputs.
    kept["task_id"] = kept.get("task_id") or letter.task_id
    kept["replay_count"] = str(letter.replay_count + 1)
    kept["replayed_at"] = now.isoformat()
    return kept


def replacement_task_id(letter: DeadLetter, sets: Sequence[tuple[str, Any]]) -> str:
    """The task id a --set replay of this dead letter runs under.

    A payload changed by --set is a different task: it gets its own id, record and outputs,
    linked to the original by `replay_of`. The id derives from the death the dead letter
    reports (its key, the same for every copy of it) and the patch, so repeating the same
    replay (after a crash between publish and ack), or replaying another copy, is one task.
    """
    patch = json.dumps([list(item) for item in sets], sort_keys=True, default=str)
    digest = hashlib.sha256(f"{letter.key}\n{patch}".encode()).hexdigest()[:32]
    return f"r{digest}"


def patch_body(data: bytes, sets: Sequence[tuple[str, Any]], task_id: str | None = None) -> bytes:
    """Set payload fields (dotted names reach into objects) in an envelope or flat body,
    and the task id when one is given."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidTaskError("the body is not JSON, so it has no fields to set") from None
    if not isinstance(body, dict):
        raise InvalidTaskError("the body is not a JSON object, so it has no fields to set")
    # The envelope keeps fields under "payload"; the recipe's flat shape keeps them at the top.
    target = body["payload"] if isinstance(body.get("payload"), dict) else body
    for name, value in sets:
        node = target
        *parents, leaf = name.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    if task_id is not None:
        body["task_id"] = task_id
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


@dataclass
class Prepared:
    """A dead letter and the message its replay publishes."""

    letter: DeadLetter
    data: bytes
    attributes: dict[str, str]
    # Set when the replay runs as a new task (its payload was changed).
    new_task_id: str | None = None
    # The queue it goes back to: its task type's, else the one it came from.
    queue: str = DEFAULT_QUEUE


@dataclass
class Plan:
    """What a replay will do with each chosen dead letter."""

    prepared: list[Prepared]
    problems: list[dict[str, Any]]
    skipped: list[DeadLetter]


SKIPPED_BECAUSE = "its task already succeeded: this dead letter is stale (removed, not replayed)"


def prepare(
    letters: Iterable[DeadLetter],
    sets: Sequence[tuple[str, Any]],
    registry: TaskRegistry,
    now: datetime,
    settings: Settings | None = None,
) -> Plan:
    """The messages to publish, what a patch would make invalid, and what is not replayed.

    A plain replay of a task whose record says succeeded is skipped: running it again would
    only find it done. A replay with --set runs as a new task, whatever became of the original.
    """
    plan = Plan([], [], [])
    for letter in letters:
        succeeded = letter.status is not None and letter.status.state == TaskState.SUCCEEDED
        if succeeded and not sets:
            plan.skipped.append(letter)
            continue
        attributes = replay_attributes(letter, now)
        new_task_id = None
        try:
            data = letter.data
            if sets:
                new_task_id = replacement_task_id(letter, sets)
                data = patch_body(letter.data, sets, task_id=new_task_id)
                attributes.update(task_id=new_task_id, replay_of=letter.task_id, replay_count="0")
                # The worker would dead-letter an invalid task at once: refuse it here instead.
                parse_message(registry, data, attributes, message_id=letter.message_id)
            check_attributes(attributes)
        except InvalidTaskError as exc:
            plan.problems.append(
                {"task_id": letter.task_id, "message_id": letter.message_id, "error": str(exc)}
            )
            continue
        queue = _queue_of(letter, registry, settings)
        attributes["queue"] = queue
        plan.prepared.append(Prepared(letter, data, attributes, new_task_id, queue))
    return plan


def _queue_of(letter: DeadLetter, registry: TaskRegistry, settings: Settings | None) -> str:
    """The queue a replay goes to: its task type's now, else the queue it was dead-lettered from."""
    if letter.task_type and letter.task_type in registry:
        return registry.get(letter.task_type).queue
    from_subscription = (
        settings.queue_of_subscription(letter.source_subscription) if settings else None
    )
    return letter.attributes.get("queue") or from_subscription or DEFAULT_QUEUE


class _AckBatcher:
    """Acks confirmed replays in batches: one RPC for many, at most ACK_FLUSH_SECONDS late."""

    def __init__(self, scan: DlqScan) -> None:
        self.scan = scan
        self._pending: list[DeadLetter] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.failed = 0
        self.errors: list[str] = []

    def add(self, letter: DeadLetter) -> None:
        with self._lock:
            self._pending.append(letter)
            due = (
                len(self._pending) >= ACK_BATCH or time.monotonic() - self._last > ACK_FLUSH_SECONDS
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Ack what is pending; never raises (scan.ack retries, and reports what it could not)."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._last = time.monotonic()
        if not batch:
            return
        try:
            failed = len(self.scan.ack(batch))
        except Exception as exc:  # a bug, not an outage: still, never lose the counts
            log.exception("ack of %d replayed dead letters failed", len(batch))
            failed = len(batch)
            self.errors.append(str(exc))
        if failed:
            # The replays are published; these dead letters stay in the DLQ, and a later
            # replay of them is a duplicate the worker recognises (same task, same life).
            self.failed += failed


def publish_replays(
    scan: DlqScan,
    prepared: Sequence[Prepared],
    publisher: Publisher,
    result: OperationResult,
    *,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Publish each prepared replay (paced by rate), acking each dead letter once confirmed."""
    stop = stop or threading.Event()
    limiter = RateLimiter(rate)
    acks = _AckBatcher(scan)
    lock = threading.Lock()
    finished = [0]
    # Bounds the publishes in flight, so a stop leaves little unconfirmed work to wait for.
    slots = threading.BoundedSemaphore(PUBLISH_THREADS * 4)

    def publish(item: Prepared) -> None:
        try:
            publisher.publish(
                publisher.settings.topic_path_for(item.queue), item.data, item.attributes
            )
        except Exception as exc:  # whatever the failure, the dead letter stays in the DLQ
            with lock:
                result.failed.append(
                    {
                        "task_id": item.letter.task_id,
                        "message_id": item.letter.message_id,
                        "error": str(exc),
                    }
                )
                finished[0] += 1
            return
        finally:
            slots.release()
        acks.add(item.letter)
        with lock:
            result.done += 1
            result.task_ids.append(item.letter.task_id)
            if item.new_task_id:
                result.new_tasks[item.letter.task_id] = item.new_task_id
            finished[0] += 1

    reported = 0

    def report() -> None:
        nonlocal reported
        with lock:
            now_finished = finished[0]
        if progress and now_finished > reported:
            progress(now_finished - reported)
            reported = now_finished

    pool = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="dlq-replay")
    try:
        for item in prepared:
            if not limiter.wait(stop):
                result.interrupted = True
                break
            slots.acquire()
            pool.submit(publish, item)
            report()
    except KeyboardInterrupt:
        # Ctrl+C: publish nothing more; what is in flight finishes and is acked if confirmed.
        result.interrupted = True
    finally:
        pool.shutdown(wait=True)
        acks.flush()
        report()
    if acks.failed:
        result.failed.append({"error": f"{acks.failed} replayed dead letters were not acked"})


def run_replay(
    settings: Settings,
    flt: DeadLetterFilter,
    *,
    actor: Actor,
    bucket: storage.Bucket,
    publisher: Publisher | None = None,
    subscriber: pubsub_v1.SubscriberClient | None = None,
    registry: TaskRegistry | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    rate: float | None = None,
    sets: Sequence[tuple[str, Any]] = (),
    confirm: Callable[[int], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> OperationResult:
    """Scan, select, validate, (confirm,) republish and audit; ReplayRefused if a patch is invalid."""
    if flt.is_empty:
        raise DlqUsageError(
            "say which dead letters to replay: all, task ids, task type, error or since"
        )
    result = OperationResult("replay", flt.describe(), dry_run=dry_run)
    started = time.monotonic()
    own_publisher = publisher is None
    publisher = publisher or Publisher(settings)
    try:
        with DlqScan(settings, subscriber) as scan:
            letters = scan.scan()
            store = StatusStore(bucket)
            attach_status(letters, store)
            matched = select(letters, flt)
            chosen = matched[:limit] if limit else matched
            result.in_dlq, result.matched, result.selected = len(letters), len(matched), len(chosen)
            result.copies = count_copies(chosen)
            # Every chosen task's record: a task that succeeded meanwhile is not run again.
            attach_status(chosen, store, every=True)
            plan = prepare(
                chosen,
                sets,
                registry if registry is not None else load_task_modules(settings.task_modules),
                now(),
                settings,
            )
            if plan.problems:
                raise ReplayRefused(plan.problems)
            result.skipped = [
                {"task_id": s.task_id, "message_id": s.message_id, "reason": SKIPPED_BECAUSE}
                for s in plan.skipped
            ]
            if dry_run:
                result.preview = [_preview(item) for item in plan.prepared[:20]]
                result.task_ids = [item.letter.task_id for item in plan.prepared]
                result.new_tasks = {
                    item.letter.task_id: item.new_task_id
                    for item in plan.prepared
                    if item.new_task_id
                }
                return result
            if chosen and confirm is not None and not confirm(len(chosen)):
                result.cancelled = True
                return result
            _remove_stale(scan, plan.skipped, result)
            publish_replays(
                scan, plan.prepared, publisher, result, rate=rate, progress=progress, stop=stop
            )
            _link_originals(store, result.new_tasks)
    finally:
        result.seconds = round(time.monotonic() - started, 3)
        if own_publisher:
            publisher.close()
    record_audit(bucket, actor, result, limit=limit, rate=rate, sets=dict(sets))
    return result


def _link_originals(store: StatusStore, new_tasks: dict[str, str]) -> None:
    """Tell each original record which task its patched replay runs as (best effort)."""
    for original, new_task_id in new_tasks.items():
        try:
            store.transition(original, replaced_by(new_task_id))
        except Exception as exc:  # the new task's record links back (replay_of) anyway
            log.warning("record of %s not linked to its replay %s: %s", original, new_task_id, exc)


def _remove_stale(scan: DlqScan, skipped: list[DeadLetter], result: OperationResult) -> None:
    """Ack the dead letters of tasks that succeeded: they only say something untrue."""
    if not skipped:
        return
    for letter in scan.ack(skipped):
        result.skipped = [s for s in result.skipped if s["message_id"] != letter.message_id]
        result.failed.append(
            {"task_id": letter.task_id, "message_id": letter.message_id, "error": "ack failed"}
        )


def _preview(item: Prepared) -> dict[str, Any]:
    try:
        body = json.loads(item.data)
    except (ValueError, UnicodeDecodeError):
        body = None
    return {"task_id": item.letter.task_id, "attributes": item.attributes, "body": body}
