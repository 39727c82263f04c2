"""The in-memory broker: publishing, leases, redelivery, dead letters and seek."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from datetime import UTC, datetime

from devstack.emulators.pubsub import validation as v
from devstack.emulators.pubsub.admin import AdminMixin
from devstack.emulators.pubsub.iam import IamMixin
from devstack.emulators.pubsub.snapshots import SnapshotMixin
from devstack.emulators.pubsub.state import Lease, Msg, Snap, Stream, Sub
from devstack.emulators.pubsub.wire import ApiError, PubsubMessage, invalid, not_found

# A response carries at most this many messages, to bound the size of one gRPC message.
MAX_BATCH = 1000
TICK_SECONDS = 0.05
_NO_ACK_IDS = "No ack ids specified."


class Broker(AdminMixin, SnapshotMixin, IamMixin):
    """All topics, subscriptions, snapshots, messages and IAM policies of one emulator, under
    one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.topics: dict = {}
        self.topic_subs: dict[str, list[Sub]] = {}
        self.subs: dict[str, Sub] = {}
        self.snapshots: dict[str, Snap] = {}
        # The snapshots that still get each topic's messages.
        self.topic_snapshots: dict[str, list[Snap]] = {}
        # IAM policies by resource name, for resources whose policy was ever set.
        self.policies: dict = {}
        self.last_etag_stamp = 0
        self.next_message_id = 1
        self._ack_seq = itertools.count(1)
        # (deadline, ack number, Sub): stale entries are skipped when popped.
        self._deadlines: list = []
        # (ready time, sequence, Sub, Msg, deliveries): nacked messages waiting out backoff.
        self._delayed: list = []
        self._delay_seq = itertools.count()
        self.dirty = False
        self.stopping = False

    # --- publishing ---

    def publish(self, topic: str, messages) -> list[str]:
        """Store messages on every subscription of topic; their ids."""
        v.check_topic_name(topic)
        with self.lock:
            if topic not in self.topics:
                raise not_found("Topic not found")
            if not messages:
                raise invalid("No messages to publish")
            for message in messages:
                if not message.data and not message.attributes:
                    raise invalid("Some messages are empty")
            return self._publish_locked(topic, messages)

    def _publish_locked(self, topic: str, messages) -> list[str]:
        # Google's emulator stamps whole milliseconds; so does this one.
        millis = time.time_ns() // 1_000_000
        ts = millis / 1000
        seconds, nanos = divmod(millis, 1000)
        nanos *= 1_000_000
        subs = self.topic_subs[topic]
        snaps = self.topic_snapshots.get(topic, ())
        ids = []
        for message in messages:
            mid = str(self.next_message_id)
            self.next_message_id += 1
            message.message_id = mid
            message.publish_time.seconds = seconds
            message.publish_time.nanos = nanos
            msg = Msg(message.SerializeToString(), ts)
            entry = (msg, 0)
            for sub in subs:
                sub.pending.append(entry)
            for snap in snaps:
                snap.messages.append(entry)
            ids.append(mid)
        for sub in subs:
            sub.cond.notify_all()
        self.dirty = True
        return ids

    # --- delivery ---

    def _take(self, sub: Sub, limit: int, stream: Stream | None) -> list:
        """Lease up to limit pending messages (lock held); (ack id, data, attempt) triples."""
        now = time.time()
        cutoff = now - sub.retention
        deadline = now + (stream.deadline if stream else sub.ack_deadline)
        counting = sub.max_attempts > 0
        pending, leases, heap = sub.pending, sub.leases, self._deadlines
        out = []
        while pending and len(out) < limit:
            if stream is not None and not stream.has_room():
                break
            msg, attempts = pending.popleft()
            if msg.ts < cutoff:
                continue
            attempts += 1
            n = next(self._ack_seq)
            leases[n] = Lease(msg, attempts, deadline, stream)
            heapq.heappush(heap, (deadline, n, sub))
            if stream is not None:
                stream.count += 1
                stream.bytes += len(msg.data)
            out.append((n, msg.data, attempts if counting else 0))
        if out:
            self.dirty = True
        return out

    def pull(self, name: str, max_messages: int, wait: float) -> tuple[Sub, list]:
        """Lease up to max_messages, waiting up to wait seconds for the first one."""
        sub = self.subscription(name)
        if max_messages <= 0:
            raise invalid("No max_messages specified")
        end = time.monotonic() + wait
        with self.lock:
            while not sub.pending and not sub.deleted and not self.stopping:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                sub.cond.wait(remaining)
            return sub, self._take(sub, max_messages, None)

    def _parse_ack_ids(self, sub: Sub, ack_ids) -> list[int]:
        prefix = sub.name
        nums = []
        for ack_id in ack_ids:
            head, sep, tail = ack_id.rpartition(":")
            if not sep or not tail.isdigit():
                raise invalid(f"Invalid ack id (ack_id={ack_id})")
            if head != prefix:
                raise invalid(
                    f"Subscription {prefix} received an invalid ack ID {ack_id}, meant for "
                    f"subscription: {head}"
                )
            nums.append(int(tail))
        return nums

    def _release(self, lease: Lease) -> None:
        """Give a lease's place in its stream's flow-control window back (lock held)."""
        stream = lease.stream
        if stream is not None:
            stream.count -= 1
            stream.bytes -= len(lease.msg.data)

    def acknowledge(self, name: str, ack_ids) -> None:
        """Acknowledge; unknown or expired ack ids are ignored, as by Google's emulator."""
        sub = self.subscription(name)
        if not ack_ids:
            raise invalid(_NO_ACK_IDS)
        nums = self._parse_ack_ids(sub, ack_ids)
        with self.lock:
            self._ack_locked(sub, nums)

    def _ack_locked(self, sub: Sub, nums: list[int]) -> None:
        leases = sub.leases
        woke = False
        for n in nums:
            lease = leases.pop(n, None)
            if lease is None:
                continue
            if lease.stream is not None:
                self._release(lease)
                woke = True
            if sub.retain_acked:
                sub.acked.append((lease.msg, lease.attempts))
        if woke:
            sub.cond.notify_all()
        self.dirty = True

    def modify_ack_deadline(self, name: str, ack_ids, seconds: int) -> None:
        """Extend leases, or (seconds == 0) give the messages back for redelivery."""
        sub = self.subscription(name)
        if seconds < 0:
            raise invalid("Ack deadline cannot be negative")
        if not ack_ids:
            # Google's emulator words this one without the full stop.
            raise invalid(_NO_ACK_IDS.rstrip("."))
        nums = self._parse_ack_ids(sub, ack_ids)
        with self.lock:
            self._modack_locked(sub, nums, [seconds] * len(nums))

    def _modack_locked(self, sub: Sub, nums: list[int], seconds: list[int]) -> None:
        now = time.time()
        leases = sub.leases
        for n, secs in zip(nums, seconds, strict=True):
            lease = leases.get(n)
            if lease is None:
                continue
            if secs == 0:
                del leases[n]
                self._requeue(sub, lease, now)
            else:
                lease.deadline = now + secs
                heapq.heappush(self._deadlines, (lease.deadline, n, sub))
        sub.cond.notify_all()

    def _requeue(self, sub: Sub, lease: Lease, now: float) -> None:
        """A nacked or expired lease: dead-letter it, or deliver it again after any backoff."""
        self._release(lease)
        self.dirty = True
        if sub.max_attempts and lease.attempts >= sub.max_attempts:
            self._dead_letter(sub, lease)
            return
        delay = sub.backoff(lease.attempts)
        if delay > 0:
            item = (now + delay, next(self._delay_seq), sub, lease.msg, lease.attempts)
            heapq.heappush(self._delayed, item)
        else:
            sub.pending.appendleft((lease.msg, lease.attempts))

    def _dead_letter(self, sub: Sub, lease: Lease) -> None:
        """Republish to the dead-letter topic with the attributes Google's emulator adds."""
        if sub.dlq_topic not in self.topics:
            return
        message = PubsubMessage.FromString(lease.msg.data)
        published = message.publish_time.ToDatetime(tzinfo=UTC)
        attributes = message.attributes
        attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = str(lease.attempts)
        attributes["CloudPubSubDeadLetterSourceSubscription"] = sub.short_name
        attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] = sub.project
        attributes["CloudPubSubDeadLetterSourceTopicPublishTime"] = _iso_millis(published)
        message.ClearField("message_id")
        message.ClearField("publish_time")
        self._publish_locked(sub.dlq_topic, [message])

    # --- streaming pull ---

    def open_stream(self, name: str, deadline: int, max_messages: int, max_bytes: int) -> Stream:
        """Register a StreamingPull call on a subscription."""
        sub = self.subs.get(name)
        if sub is None:
            raise not_found(f"Subscription does not exist (resource={name.rpartition('/')[2]})")
        return Stream(sub, deadline, max_messages, max_bytes)

    def stream_request(self, stream: Stream, request) -> None:
        """Apply the acks, modacks and setting changes of one StreamingPullRequest."""
        sub = stream.sub
        if len(request.modify_deadline_ack_ids) != len(request.modify_deadline_seconds):
            raise invalid(
                "modify_deadline_ack_ids and modify_deadline_seconds must have the same length"
            )
        acks = self._parse_ack_ids(sub, request.ack_ids)
        modacks = self._parse_ack_ids(sub, request.modify_deadline_ack_ids)
        with self.lock:
            if request.stream_ack_deadline_seconds:
                stream.deadline = request.stream_ack_deadline_seconds
            if request.max_outstanding_messages:
                stream.max_messages = request.max_outstanding_messages
            if request.max_outstanding_bytes:
                stream.max_bytes = request.max_outstanding_bytes
            if acks:
                self._ack_locked(sub, acks)
            if modacks:
                self._modack_locked(sub, modacks, list(request.modify_deadline_seconds))

    def stream_next(self, stream: Stream, timeout: float) -> list | None:
        """Messages for a stream, [] after timeout with nothing to send, None once it closed."""
        sub = stream.sub
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                if stream.closed or self.stopping:
                    return None
                if stream.error is not None:
                    raise stream.error
                if sub.deleted:
                    raise not_found(f"Subscription does not exist (resource={sub.short_name})")
                if sub.pending and stream.has_room():
                    return self._take(sub, MAX_BATCH, stream)
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return []
                sub.cond.wait(remaining)

    def close_stream(self, stream: Stream, error: ApiError | None = None) -> None:
        """Wake a stream's sender to end it (with error, if given); its leases run on."""
        with self.lock:
            if error is not None:
                stream.error = error
            else:
                stream.closed = True
            stream.sub.cond.notify_all()

    # --- seek and housekeeping ---

    def seek(self, name: str, seconds: float) -> None:
        """Mark messages published before seconds acknowledged and those after not."""
        sub = self.subscription(name)
        with self.lock:
            entries = sorted(self._take_all(sub), key=lambda e: e[0].ts)
            self._reset(
                sub,
                [e for e in entries if e[0].ts >= seconds],
                [e for e in entries if e[0].ts < seconds],
            )

    def _take_all(self, sub: Sub) -> list:
        """Every message sub holds, acknowledged or not, its leases and backoffs ended (lock held)."""
        entries = self._unacked(sub) + list(sub.acked)
        for lease in sub.leases.values():
            self._release(lease)
        sub.leases.clear()
        keep = [d for d in self._delayed if d[2] is not sub]
        if len(keep) != len(self._delayed):
            heapq.heapify(keep)
            self._delayed = keep
        return entries

    def _reset(self, sub: Sub, unacked: list, acked: list) -> None:
        """Give sub these unacknowledged and (kept if it retains them) acknowledged messages."""
        sub.pending = deque(unacked)
        sub.acked = deque(acked) if sub.retain_acked else deque()
        sub.cond.notify_all()
        self.dirty = True

    def tick(self) -> None:
        """Expire leases and end backoffs that are due."""
        now = time.time()
        with self.lock:
            heap = self._deadlines
            while heap and heap[0][0] <= now:
                deadline, n, sub = heapq.heappop(heap)
                lease = sub.leases.get(n)
                if lease is None or lease.deadline != deadline or sub.deleted:
                    continue
                del sub.leases[n]
                self._requeue(sub, lease, now)
                sub.cond.notify_all()
            delayed = self._delayed
            while delayed and delayed[0][0] <= now:
                _, _, sub, msg, attempts = heapq.heappop(delayed)
                if not sub.deleted:
                    sub.pending.appendleft((msg, attempts))
                    sub.cond.notify_all()

    def trim(self) -> None:
        """Drop messages older than their subscription's retention from the queue heads, and
        snapshots past their lifetime."""
        now = time.time()
        with self.lock:
            self.expire_snapshots(now)
            for sub in self.subs.values():
                cutoff = now - sub.retention
                for queue in (sub.pending, sub.acked):
                    while queue and queue[0][0].ts < cutoff:
                        queue.popleft()

    def run_ticker(self, stop: threading.Event) -> None:
        """Tick until stop is set; trims retention about once a second."""
        rounds = 0
        while not stop.wait(TICK_SECONDS):
            self.tick()
            rounds += 1
            if rounds % 20 == 0:
                self.trim()

    def stop(self) -> None:
        """Wake every waiting pull and stream so the server can shut down."""
        with self.lock:
            self.stopping = True
            for sub in self.subs.values():
                sub.cond.notify_all()


def _iso_millis(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
