"""Conformance: publish, pull, acknowledgements, redelivery, dead letters, backoff and seek."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from google.api_core import exceptions
from google.pubsub_v1 import types

pytestmark = pytest.mark.integration

DEAD_LETTER_ATTRIBUTES = {
    "CloudPubSubDeadLetterSourceDeliveryCount",
    "CloudPubSubDeadLetterSourceSubscription",
    "CloudPubSubDeadLetterSourceSubscriptionProject",
    "CloudPubSubDeadLetterSourceTopicPublishTime",
}


def test_publish_assigns_ids_and_publish_time(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    ids = ps.publish(
        topic,
        types.PubsubMessage(data=b"one", attributes={"k": "v"}, ordering_key="key-1"),
        types.PubsubMessage(attributes={"only": "attributes"}),
        b"three",
    )
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert len(set(ids)) == 3 and all(ids)
    received = ps.wait_for(sub, 3)
    messages = [r.message for r in received]
    assert [m.message_id for m in messages] == ids
    assert [m.data for m in messages] == [b"one", b"", b"three"]
    assert dict(messages[0].attributes) == {"k": "v"}
    assert dict(messages[1].attributes) == {"only": "attributes"}
    assert messages[0].ordering_key == "key-1"
    for m in messages:
        assert before <= m.publish_time <= after
    # Without a dead-letter policy the delivery attempt is 0 (the client shows None).
    assert [r.delivery_attempt for r in received] == [0, 0, 0]


def test_publish_with_the_batching_client(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    futures = [ps.pub.publish(topic, f"m{i}".encode(), n=str(i)) for i in range(50)]
    ids = [f.result(timeout=30) for f in futures]
    received = ps.wait_for(sub, 50)
    assert sorted(r.message.message_id for r in received) == sorted(ids)
    assert sorted(r.message.attributes["n"] for r in received) == sorted(str(i) for i in range(50))


def test_empty_message_is_rejected(ps):
    topic = ps.topic()
    with pytest.raises(exceptions.InvalidArgument):
        ps.publish(topic, types.PubsubMessage())


def test_only_messages_after_creation_are_delivered_to_every_subscription(ps):
    topic = ps.topic()
    ps.publish(topic, b"early")
    first, second = ps.subscription("sub-a", topic), ps.subscription("sub-b", topic)
    ps.publish(topic, b"late")
    for sub in (first, second):
        assert [r.message.data for r in ps.wait_for(sub, 1)] == [b"late"]
        assert ps.pull_now(sub) == []


def test_pull_respects_max_messages_and_order_then_ack(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=30)
    ps.publish(topic, *[str(i).encode() for i in range(30)])
    first = ps.sub.pull(subscription=sub, max_messages=20).received_messages
    assert [r.message.data for r in first] == [str(i).encode() for i in range(20)]
    rest = ps.pull_now(sub, 1000)
    assert len(rest) == 10
    ps.ack(sub, list(first) + rest)
    assert ps.pull_now(sub) == []


def test_blocking_pull_wakes_when_a_message_arrives(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    threading.Timer(0.5, ps.publish, args=(topic, b"late")).start()
    start = time.monotonic()
    received = ps.sub.pull(subscription=sub, max_messages=5, timeout=20).received_messages
    assert [r.message.data for r in received] == [b"late"]
    assert time.monotonic() - start < 5


def test_pull_and_ack_errors(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    other = ps.subscription("sub-other", topic)
    missing = ps.sub_path("missing")
    with pytest.raises(exceptions.NotFound):
        ps.sub.pull(subscription=missing, max_messages=1)
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.pull(subscription=sub, max_messages=0)
    with pytest.raises(exceptions.NotFound):
        ps.sub.acknowledge(subscription=missing, ack_ids=["x"])
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.acknowledge(subscription=sub, ack_ids=[])
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.acknowledge(subscription=sub, ack_ids=["garbage"])
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.modify_ack_deadline(subscription=sub, ack_ids=[], ack_deadline_seconds=10)
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.modify_ack_deadline(subscription=sub, ack_ids=["garbage"], ack_deadline_seconds=10)
    ps.publish(topic, b"x")
    (received,) = ps.wait_for(other, 1)
    # An ack id of another subscription is refused, not ignored.
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.acknowledge(subscription=sub, ack_ids=[received.ack_id])
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.modify_ack_deadline(
            subscription=other, ack_ids=[received.ack_id], ack_deadline_seconds=-1
        )
    # Acking twice, or an ack id that is no longer outstanding, is fine.
    ps.ack(other, [received])
    ps.ack(other, [received])
    ps.nack(other, [received])
    ps.sub.modify_ack_deadline(
        subscription=other, ack_ids=[received.ack_id], ack_deadline_seconds=30
    )
    assert ps.pull_now(other) == []


def test_expired_ack_deadline_redelivers(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=2)
    ps.publish(topic, b"x")
    (first,) = ps.wait_for(sub, 1)
    start = time.monotonic()
    assert ps.pull_now(sub) == []
    (again,) = ps.wait_for(sub, 1, timeout=6)
    assert 1.5 <= time.monotonic() - start <= 4
    assert again.message.message_id == first.message.message_id
    assert again.ack_id != first.ack_id
    assert again.delivery_attempt == 0
    # The first delivery's ack id no longer acknowledges the message.
    ps.ack(sub, [first])
    ps.nack(sub, [again])
    assert [r.message.data for r in ps.wait_for(sub, 1)] == [b"x"]


def test_modify_ack_deadline_extends_the_lease(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=1)
    ps.publish(topic, b"x")
    (first,) = ps.wait_for(sub, 1)
    ps.sub.modify_ack_deadline(subscription=sub, ack_ids=[first.ack_id], ack_deadline_seconds=3)
    start = time.monotonic()
    time.sleep(1.5)
    assert ps.pull_now(sub) == []
    assert len(ps.wait_for(sub, 1, timeout=5)) == 1
    assert 2.5 <= time.monotonic() - start <= 4.5


def test_nack_redelivers_at_once_without_retry_policy(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=60)
    ps.publish(topic, b"x")
    for _ in range(3):
        received = ps.wait_for(sub, 1)
        start = time.monotonic()
        ps.nack(sub, received)
    assert len(ps.wait_for(sub, 1, timeout=2)) == 1
    assert time.monotonic() - start < 1


def test_delivery_attempts_and_dead_letter(ps):
    topic, dead = ps.topic(), ps.topic("topic-dead")
    sub = ps.subscription(
        "sub-main",
        topic,
        ack_deadline_seconds=60,
        dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5},
    )
    dead_sub = ps.subscription("sub-dead", dead)
    (mid,) = ps.publish(
        topic, types.PubsubMessage(data=b"poison", attributes={"k": "v"}, ordering_key="key-1")
    )
    attempts = []
    for _ in range(5):
        (received,) = ps.wait_for(sub, 1)
        attempts.append(received.delivery_attempt)
        ps.nack(sub, [received])
    assert attempts == [1, 2, 3, 4, 5]
    # The fifth nack was the last: the message is not delivered again but dead-lettered.
    assert ps.pull_now(sub) == []
    (dead_letter,) = ps.wait_for(dead_sub, 1)
    message = dead_letter.message
    assert message.data == b"poison"
    assert message.ordering_key == "key-1"
    assert message.message_id != mid
    assert dead_letter.delivery_attempt == 0
    attributes = dict(message.attributes)
    assert set(attributes) == {"k"} | DEAD_LETTER_ATTRIBUTES
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == "sub-main"
    assert attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] == ps.project.split("/")[1]
    published = dt.datetime.strptime(
        attributes["CloudPubSubDeadLetterSourceTopicPublishTime"], "%Y-%m-%dT%H:%M:%S.%f%z"
    )
    assert abs((published - message.publish_time).total_seconds()) < 5


def test_when_the_dead_letter_is_forwarded(ps):
    """Ours forwards at the last nack; Google's emulator only when the source is pulled again."""
    topic, dead = ps.topic(), ps.topic("topic-dead")
    policy = {"dead_letter_topic": dead, "max_delivery_attempts": 5}
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=60, dead_letter_policy=policy)
    dead_sub = ps.subscription("sub-dead", dead)
    ps.publish(topic, b"poison")
    for _ in range(5):
        ps.nack(sub, ps.wait_for(sub, 1))
    forwarded = ps.wait_for(dead_sub, 1, timeout=2)
    if ps.kind == "google":
        assert forwarded == []
        assert ps.pull_now(sub) == []
        forwarded = ps.wait_for(dead_sub, 1, timeout=2)
    assert [r.message.data for r in forwarded] == [b"poison"]


def test_expiry_counts_as_a_delivery_attempt(ps):
    topic, dead = ps.topic(), ps.topic("topic-dead")
    sub = ps.subscription(
        "sub-main",
        topic,
        ack_deadline_seconds=1,
        dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5},
    )
    ps.publish(topic, b"x")
    (first,) = ps.wait_for(sub, 1)
    (second,) = ps.wait_for(sub, 1, timeout=5)
    assert (first.delivery_attempt, second.delivery_attempt) == (1, 2)


def test_retry_policy_backoff_after_nack(ps):
    """Ours waits minimum_backoff before redelivering; Google's emulator ignores retry_policy."""
    topic = ps.topic()
    policy = {"minimum_backoff": {"seconds": 2}, "maximum_backoff": {"seconds": 2}}
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=60, retry_policy=policy)
    ps.publish(topic, b"x")
    received = ps.wait_for(sub, 1)
    ps.nack(sub, received)
    start = time.monotonic()
    assert len(ps.wait_for(sub, 1, timeout=6)) == 1
    elapsed = time.monotonic() - start
    if ps.kind == "google":
        assert elapsed < 1
    else:
        assert 1.8 <= elapsed <= 4


def test_retry_policy_backoff_after_expiry(ps):
    """Backoff also applies to expired leases in ours; Google's redelivers at expiry."""
    topic = ps.topic()
    policy = {"minimum_backoff": {"seconds": 2}, "maximum_backoff": {"seconds": 2}}
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=1, retry_policy=policy)
    ps.publish(topic, b"x")
    ps.wait_for(sub, 1)
    start = time.monotonic()
    assert len(ps.wait_for(sub, 1, timeout=8)) == 1
    elapsed = time.monotonic() - start
    if ps.kind == "google":
        assert elapsed < 2
    else:
        assert 2.8 <= elapsed <= 5


def _timestamp(when: float) -> dict:
    return {"seconds": int(when), "nanos": int((when % 1) * 1e9)}


def test_seek_to_a_time(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=60)
    ps.publish(topic, *[f"early-{i}".encode() for i in range(3)])
    time.sleep(0.3)
    middle = time.time()
    time.sleep(0.3)
    ps.publish(topic, b"late")
    assert len(ps.wait_for(sub, 4)) == 4
    # Seeking to a time acks what was published before it and releases the rest, leased or not.
    ps.sub.seek(request={"subscription": sub, "time": _timestamp(middle)})
    assert [r.message.data for r in ps.wait_for(sub, 1)] == [b"late"]
    assert ps.pull_now(sub) == []
    # Seeking to the future purges the subscription; seeking back cannot undo that.
    ps.sub.seek(request={"subscription": sub, "time": _timestamp(time.time() + 5)})
    assert ps.pull_now(sub) == []
    ps.sub.seek(request={"subscription": sub, "time": _timestamp(middle - 60)})
    assert ps.pull_now(sub) == []


def test_seek_back_replays_retained_acked_messages(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, retain_acked_messages=True)
    ps.publish(topic, b"one", b"two")
    ps.ack(sub, ps.wait_for(sub, 2))
    assert ps.pull_now(sub) == []
    ps.sub.seek(request={"subscription": sub, "time": _timestamp(time.time() - 60)})
    assert sorted(r.message.data for r in ps.wait_for(sub, 2)) == [b"one", b"two"]


def test_seek_errors(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    with pytest.raises(exceptions.NotFound):
        ps.sub.seek(
            request={"subscription": ps.sub_path("missing"), "time": _timestamp(time.time())}
        )
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.seek(request={"subscription": sub})
