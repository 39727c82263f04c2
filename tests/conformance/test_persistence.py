"""Ours only: --data-dir keeps topics, subscriptions, IAM policies and unacked messages.

Google's emulator keeps nothing across restarts, so there is nothing to compare with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

import pytest
from google.api_core import exceptions
from google.iam.v1 import policy_pb2
from google.pubsub_v1 import types

from devstack.emulators import start_pubsub_emulator

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _python_emulator(make_clients, data_dir, log_path):
    handle = start_pubsub_emulator(choice="python", data_dir=str(data_dir), log_path=str(log_path))
    try:
        publisher, subscriber = make_clients(handle.env_value)
        yield handle, publisher, subscriber
        subscriber.close()
    finally:
        handle.stop()


def _pull(subscriber, sub, count, timeout=5.0):
    got, end = [], time.monotonic() + timeout
    while len(got) < count and time.monotonic() < end:
        request = {"subscription": sub, "max_messages": count, "return_immediately": True}
        got += subscriber.pull(request=request).received_messages
        time.sleep(0.02)
    return got


def test_state_survives_a_restart(tmp_path, client_factory):
    project = f"projects/persist-{uuid.uuid4().hex[:8]}"
    topic, dead = f"{project}/topics/topic-main", f"{project}/topics/topic-dead"
    sub = f"{project}/subscriptions/sub-main"
    log = tmp_path / "emulator.log"
    with _python_emulator(client_factory, tmp_path / "data", log) as (_, pub, subscriber):
        pub.create_topic(name=topic)
        pub.create_topic(name=dead)
        policy = {"dead_letter_topic": dead, "max_delivery_attempts": 5}
        subscriber.create_subscription(
            request={
                "name": sub,
                "topic": topic,
                "ack_deadline_seconds": 30,
                "dead_letter_policy": policy,
            }
        )
        messages = [
            types.PubsubMessage(data=f"m{i}".encode(), attributes={"i": str(i)}) for i in range(3)
        ]
        ids = pub.api.publish(topic=topic, messages=messages).message_ids
        first, leased = _pull(subscriber, sub, 2)
        subscriber.acknowledge(subscription=sub, ack_ids=[first.ack_id])
        # leased stays outstanding across the restart; a clean stop writes the final snapshot.
    with _python_emulator(client_factory, tmp_path / "data", log) as (_, pub, subscriber):
        assert [t.name for t in pub.list_topics(project=project)] == sorted([topic, dead])
        config = subscriber.get_subscription(subscription=sub)
        assert config.ack_deadline_seconds == 30
        assert config.dead_letter_policy.dead_letter_topic == dead
        received = _pull(subscriber, sub, 3, timeout=2)
        assert sorted(r.message.message_id for r in received) == sorted(ids[1:])
        assert {r.message.message_id: r.delivery_attempt for r in received}[
            leased.message.message_id
        ] == 2
        new_id = pub.api.publish(
            topic=topic, messages=[types.PubsubMessage(data=b"new")]
        ).message_ids[0]
        assert new_id not in ids


def test_state_survives_a_crash(tmp_path, client_factory):
    project = f"projects/crash-{uuid.uuid4().hex[:8]}"
    topic, sub = f"{project}/topics/topic-main", f"{project}/subscriptions/sub-main"
    log = tmp_path / "emulator.log"
    with _python_emulator(client_factory, tmp_path / "data", log) as (handle, pub, subscriber):
        pub.create_topic(name=topic)
        subscriber.create_subscription(name=sub, topic=topic)
        pub.api.publish(topic=topic, messages=[types.PubsubMessage(data=b"kept")])
        time.sleep(2)  # snapshots are written about once a second
        os.killpg(handle.proc.pid, signal.SIGKILL)
        handle.proc.wait(10)
    with _python_emulator(client_factory, tmp_path / "data", log) as (_, pub, subscriber):
        assert [r.message.data for r in _pull(subscriber, sub, 1)] == [b"kept"]


def test_iam_policies_survive_a_restart(tmp_path, client_factory):
    project = f"projects/persist-{uuid.uuid4().hex[:8]}"
    topic, sub = f"{project}/topics/topic-main", f"{project}/subscriptions/sub-main"
    deleted = f"{project}/topics/topic-deleted"
    log = tmp_path / "emulator.log"
    policy = policy_pb2.Policy()
    policy.bindings.add(role="roles/pubsub.publisher", members=["user:ada@example.com"])
    with _python_emulator(client_factory, tmp_path / "data", log) as (_, pub, subscriber):
        for name in (topic, deleted):
            pub.create_topic(name=name)
            pub.set_iam_policy(request={"resource": name, "policy": policy})
        subscriber.create_subscription(name=sub, topic=topic)
        kept = pub.set_iam_policy(request={"resource": topic, "policy": policy})
        sub_kept = subscriber.set_iam_policy(request={"resource": sub, "policy": policy})
        pub.delete_topic(topic=deleted)
    with _python_emulator(client_factory, tmp_path / "data", log) as (_, pub, subscriber):
        assert pub.get_iam_policy(request={"resource": topic}) == kept
        assert subscriber.get_iam_policy(request={"resource": sub}) == sub_kept
        pub.create_topic(name=deleted)
        assert list(pub.get_iam_policy(request={"resource": deleted}).bindings) == []
        # The etag read before the restart still guards the read-modify-write.
        changed = pub.set_iam_policy(
            request={"resource": topic, "policy": policy_pb2.Policy(etag=kept.etag)}
        )
        assert changed.etag not in (kept.etag, sub_kept.etag)
        with pytest.raises(exceptions.Aborted):
            pub.set_iam_policy(
                request={"resource": topic, "policy": policy_pb2.Policy(etag=kept.etag)}
            )


def test_snapshots_survive_a_restart(tmp_path, client_factory):
    project = f"projects/persist-{uuid.uuid4().hex[:8]}"
    topic, sub = f"{project}/topics/topic-main", f"{project}/subscriptions/sub-main"
    snapshot, orphan = f"{project}/snapshots/snap-main", f"{project}/snapshots/snap-orphan"
    gone_topic = f"{project}/topics/topic-gone"
    log = tmp_path / "emulator.log"
    with _python_emulator(client_factory, tmp_path / "data", log) as (_, pub, subscriber):
        for name in (topic, gone_topic):
            pub.create_topic(name=name)
        subscriber.create_subscription(name=sub, topic=topic)
        subscriber.create_subscription(name=f"{sub}-gone", topic=gone_topic)
        pub.api.publish(topic=topic, messages=[types.PubsubMessage(data=b"before")])
        created = subscriber.create_snapshot(name=snapshot, subscription=sub)
        subscriber.create_snapshot(name=orphan, subscription=f"{sub}-gone")
        pub.delete_topic(topic=gone_topic)
        pub.api.publish(topic=topic, messages=[types.PubsubMessage(data=b"after")])
        subscriber.acknowledge(
            subscription=sub, ack_ids=[m.ack_id for m in _pull(subscriber, sub, 2)]
        )
    with _python_emulator(client_factory, tmp_path / "data", log) as (_, pub, subscriber):
        assert subscriber.get_snapshot(snapshot=snapshot) == created
        # Still the messages' snapshot: one published now joins it, as before the restart.
        pub.api.publish(topic=topic, messages=[types.PubsubMessage(data=b"restarted")])
        subscriber.acknowledge(
            subscription=sub, ack_ids=[m.ack_id for m in _pull(subscriber, sub, 1)]
        )
        subscriber.seek(request={"subscription": sub, "snapshot": snapshot})
        restored = sorted(m.message.data for m in _pull(subscriber, sub, 3))
        assert restored == [b"after", b"before", b"restarted"]
        # The snapshot of the deleted topic stays detached from a new topic of that name.
        pub.create_topic(name=gone_topic)
        subscriber.create_subscription(name=f"{sub}-new", topic=gone_topic)
        with pytest.raises(exceptions.FailedPrecondition):
            subscriber.seek(request={"subscription": f"{sub}-new", "snapshot": orphan})
