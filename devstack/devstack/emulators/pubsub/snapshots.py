"""Snapshots: create, get, list, update, delete, expire, and Seek to one."""

from __future__ import annotations

import time
import uuid
from collections import deque

import grpc

from devstack.emulators.pubsub import validation as v
from devstack.emulators.pubsub.admin import page_of
from devstack.emulators.pubsub.state import Snap
from devstack.emulators.pubsub.wire import (
    ApiError,
    Snapshot,
    failed_precondition,
    invalid,
    not_found,
)

# A snapshot lives 7 days less the age of the oldest message it keeps, and is refused when
# that leaves less than an hour (Pub/Sub's API reference, Snapshot.expire_time).
SNAPSHOT_LIFETIME = 7 * 24 * 3600
MIN_SNAPSHOT_LIFETIME = 3600
MUTABLE_SNAPSHOT_FIELDS = frozenset({"labels"})
_SNAPSHOT_NOT_FOUND = "Snapshot does not exist"


class SnapshotMixin:
    """The snapshot RPCs of the broker; expects the attributes Broker sets up."""

    def create_snapshot(self, name: str, subscription: str, labels) -> Snapshot:
        """Snapshot what subscription has not acknowledged; from then on it also keeps every
        message published to the topic. Without a name, one is made up (as Pub/Sub does)."""
        with self.lock:
            sub = self.subscription(subscription)
            if not name:
                name = f"projects/{sub.project}/snapshots/snapshot-{uuid.uuid4().hex}"
            v.check_snapshot_name(name)
            if name in self.snapshots:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Snapshot already exists")
            topic = sub.config.topic
            if topic not in self.topics:
                raise failed_precondition(
                    f"The subscription {subscription} is detached from its deleted topic; "
                    "there is nothing to snapshot."
                )
            now = time.time()
            unacked = sorted(self._unacked(sub), key=lambda entry: entry[0].ts)
            oldest = min(unacked[0][0].ts, now) if unacked else now
            expires = oldest + SNAPSHOT_LIFETIME
            if expires - now < MIN_SNAPSHOT_LIFETIME:
                raise failed_precondition(
                    "The oldest unacknowledged message of the subscription is too old: the "
                    "snapshot would expire in less than 1 hour."
                )
            config = Snapshot(name=name, topic=topic, labels=labels)
            # Whole milliseconds, like the publish times the expiry derives from.
            config.expire_time.FromMilliseconds(round(expires * 1000))
            snap = Snap(config, deque(unacked), expires)
            self.snapshots[name] = snap
            self.topic_snapshots.setdefault(topic, []).append(snap)
            self.dirty = True
            return config

    def _unacked(self, sub) -> list:
        """(Msg, deliveries) of everything sub has not acknowledged (lock held)."""
        entries = list(sub.pending)
        entries += [(lease.msg, lease.attempts) for lease in sub.leases.values()]
        entries += [(d[3], d[4]) for d in self._delayed if d[2] is sub]
        return entries

    def snapshot(self, name: str) -> Snap:
        """The snapshot called name, or NOT_FOUND."""
        snap = self.snapshots.get(name)
        if snap is None:
            v.check_snapshot_name(name)
            raise not_found(_SNAPSHOT_NOT_FOUND)
        return snap

    def get_snapshot(self, name: str) -> Snapshot:
        """A snapshot's settings."""
        return self.snapshot(name).config

    def list_topic_snapshots(self, topic: str, page_size: int, page_token: str):
        """One page of the names of the snapshots keeping a topic's messages."""
        v.check_topic_name(topic)
        with self.lock:
            names = sorted(snap.name for snap in self.topic_snapshots.get(topic, ()))
        return page_of(names, page_size, page_token)

    def update_snapshot(self, changes: Snapshot, paths) -> Snapshot:
        """Change the fields named by paths (an update mask); only labels may change."""
        if not paths:
            raise invalid("The update_mask in the UpdateSnapshotRequest must be set and non-empty.")
        for path in paths:
            if path not in MUTABLE_SNAPSHOT_FIELDS:
                raise invalid(
                    "Invalid update_mask provided in the UpdateSnapshotRequest: the "
                    f"{path} field of a Snapshot cannot be updated."
                )
        with self.lock:
            snap = self.snapshot(changes.name)
            config = Snapshot()
            config.CopyFrom(snap.config)
            config.labels.clear()
            config.labels.update(changes.labels)
            snap.config = config
            self.dirty = True
            return config

    def delete_snapshot(self, name: str) -> None:
        """Delete a snapshot and its IAM policy; subscriptions that sought to it keep their state."""
        with self.lock:
            self._drop_snapshot(self.snapshot(name))

    def _drop_snapshot(self, snap: Snap) -> None:
        del self.snapshots[snap.name]
        self.policies.pop(snap.name, None)
        kept = self.topic_snapshots.get(snap.config.topic)
        if snap.attached and kept is not None:
            kept.remove(snap)
        self.dirty = True

    def detach_snapshots(self, topic: str) -> None:
        """The topic was deleted (lock held): its snapshots get no more messages."""
        for snap in self.topic_snapshots.pop(topic, ()):
            snap.attached = False

    def expire_snapshots(self, now: float) -> None:
        """Delete the snapshots whose lifetime is over (lock held)."""
        for snap in [s for s in self.snapshots.values() if s.expires <= now]:
            self._drop_snapshot(snap)

    def seek_to_snapshot(self, subscription: str, snapshot: str) -> None:
        """Make exactly what the snapshot keeps unacknowledged on the subscription."""
        with self.lock:
            sub = self.subscription(subscription)
            snap = self.snapshot(snapshot)
            if not snap.attached or snap.config.topic != sub.config.topic:
                raise failed_precondition(
                    f"The subscription's topic {sub.config.topic} is different from that of the "
                    f"snapshot {snap.config.topic}; they must match in order for Seek work. Note "
                    "that if a topic is deleted and then re-created with the same name, it is "
                    "considered a distinct topic for these purposes."
                )
            kept = {id(msg) for msg, _ in snap.messages}
            acked = [e for e in self._take_all(sub) if id(e[0]) not in kept]
            self._reset(sub, list(snap.messages), sorted(acked, key=lambda e: e[0].ts))
