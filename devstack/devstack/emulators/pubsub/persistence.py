"""--data-dir: the broker's state (topics, subscriptions, Pub/Sub snapshots, IAM policies and
the messages they keep) saved to one file about once a second, and loaded at start."""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections import deque
from pathlib import Path

from devstack.emulators.pubsub.broker import Broker
from devstack.emulators.pubsub.iam import Policy
from devstack.emulators.pubsub.state import Msg, Snap, Sub
from devstack.emulators.pubsub.wire import Snapshot, Subscription, Topic

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "pubsub-state.pickle"
FORMAT_VERSION = 1
INTERVAL_SECONDS = 1.0


def export_state(broker: Broker) -> dict:
    """A picklable copy of everything worth keeping; leases count as unacknowledged."""
    with broker.lock:
        subs = {}
        delayed: dict[int, list] = {}
        for _, _, sub, msg, attempts in broker._delayed:
            delayed.setdefault(id(sub), []).append((msg.data, msg.ts, attempts))
        for name, sub in broker.subs.items():
            # Redelivery order: leased and backing-off messages first, then the queue.
            messages = [(le.msg.data, le.msg.ts, le.attempts) for le in sub.leases.values()]
            messages += delayed.get(id(sub), [])
            messages += [(m.data, m.ts, attempts) for m, attempts in sub.pending]
            acked = [(m.data, m.ts, attempts) for m, attempts in sub.acked]
            subs[name] = (sub.config.SerializeToString(), messages, acked)
        snapshots = {
            name: (
                snap.config.SerializeToString(),
                [(m.data, m.ts, attempts) for m, attempts in snap.messages],
                snap.expires,
                snap.attached,
            )
            for name, snap in broker.snapshots.items()
        }
        broker.dirty = False
        return {
            "version": FORMAT_VERSION,
            "next_message_id": broker.next_message_id,
            "topics": {n: t.SerializeToString() for n, t in broker.topics.items()},
            "subscriptions": subs,
            "snapshots": snapshots,
            "iam_policies": {n: p.SerializeToString() for n, p in broker.policies.items()},
            "last_etag_stamp": broker.last_etag_stamp,
        }


def import_state(broker: Broker, state: dict) -> None:
    """Load what export_state saved into an empty broker."""
    if state.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown snapshot format {state.get('version')!r}")
    with broker.lock:
        broker.next_message_id = state["next_message_id"]
        for name, data in state["topics"].items():
            broker.topics[name] = Topic.FromString(data)
            broker.topic_subs[name] = []
        # Messages shared by several subscriptions were pickled once; share them again.
        shared: dict[int, Msg] = {}

        def restore(items):
            out = deque()
            for data, ts, attempts in items:
                msg = shared.get(id(data))
                if msg is None:
                    msg = shared[id(data)] = Msg(data, ts)
                out.append((msg, attempts))
            return out

        for name, (config_bytes, messages, acked) in state["subscriptions"].items():
            sub = Sub(Subscription.FromString(config_bytes), broker.lock)
            sub.pending = restore(messages)
            sub.acked = restore(acked)
            broker.subs[name] = sub
            broker.topic_subs.get(sub.config.topic, []).append(sub)
        # Files written before snapshots and IAM policies were kept have neither.
        for name, (config_bytes, messages, expires, attached) in state.get("snapshots", {}).items():
            snap = Snap(Snapshot.FromString(config_bytes), restore(messages), expires)
            snap.attached = attached and snap.config.topic in broker.topics
            broker.snapshots[name] = snap
            if snap.attached:
                broker.topic_snapshots.setdefault(snap.config.topic, []).append(snap)
        for name, data in state.get("iam_policies", {}).items():
            broker.policies[name] = Policy.FromString(data)
        broker.last_etag_stamp = state.get("last_etag_stamp", 0)


class Snapshotter:
    """Keeps data_dir/pubsub-state.pickle at most about a second behind the broker."""

    def __init__(self, broker: Broker, data_dir: str | os.PathLike) -> None:
        self.broker = broker
        self.dir = Path(data_dir)
        self.path = self.dir / SNAPSHOT_FILE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> bool:
        """Restore the last snapshot, if there is one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return False
        with self.path.open("rb") as f:
            # Our own file in a directory the operator chose; nothing else writes it.
            import_state(self.broker, pickle.load(f))
        log.info("restored Pub/Sub emulator state from %s", self.path)
        return True

    def save(self) -> None:
        """Write a snapshot now: to a temporary file, then renamed over the old one."""
        state = export_state(self.broker)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def start(self) -> None:
        """Save in the background whenever something changed."""
        self._thread = threading.Thread(target=self._run, name="pubsub-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_SECONDS):
            if self.broker.dirty:
                try:
                    self.save()
                except OSError:
                    log.exception("could not write %s", self.path)

    def stop(self) -> None:
        """Stop the background saver and write a final snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.save()
