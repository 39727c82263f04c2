"""Conformance: StreamingPull, through the client's subscribe() and driven by hand."""

from __future__ import annotations

import threading
import time

import pytest
from google.api_core import exceptions
from google.cloud.pubsub_v1.types import FlowControl

pytestmark = pytest.mark.integration


def _subscribe(ps, sub, callback, **flow):
    future = ps.sub.subscribe(sub, callback, flow_control=FlowControl(**flow) if flow else ())
    return future


def test_subscribe_receives_every_message_once(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=30)
    seen: list = []
    done = threading.Event()

    def callback(message):
        seen.append((message.data, message.delivery_attempt))
        message.ack()
        if len(seen) >= 50:
            done.set()

    future = _subscribe(ps, sub, callback)
    try:
        ps.publish(topic, *[f"m{i}".encode() for i in range(50)])
        assert done.wait(20)
        time.sleep(0.5)
    finally:
        future.cancel()
        future.result(timeout=10)
    assert sorted(d for d, _ in seen) == sorted(f"m{i}".encode() for i in range(50))
    assert {a for _, a in seen} == {None}
    assert ps.pull_now(sub) == []


def test_subscribe_nack_redelivers_with_attempts(ps):
    topic, dead = ps.topic(), ps.topic("topic-dead")
    policy = {"dead_letter_topic": dead, "max_delivery_attempts": 5}
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=30, dead_letter_policy=policy)
    attempts: list = []
    done = threading.Event()

    def callback(message):
        attempts.append(message.delivery_attempt)
        if message.delivery_attempt < 3:
            message.nack()
        else:
            message.ack()
            done.set()

    future = _subscribe(ps, sub, callback)
    try:
        ps.publish(topic, b"x")
        assert done.wait(20)
    finally:
        future.cancel()
        future.result(timeout=10)
    assert attempts == [1, 2, 3]


def test_client_flow_control_limits_outstanding_messages(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=30)
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "done": 0}
    done = threading.Event()

    def callback(message):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
            state["done"] += 1
        message.ack()
        if state["done"] >= 20:
            done.set()

    future = _subscribe(ps, sub, callback, max_messages=3)
    try:
        ps.publish(topic, *[b"x"] * 20)
        assert done.wait(30)
    finally:
        future.cancel()
        future.result(timeout=10)
    assert 1 <= state["max"] <= 3


def test_raw_stream_acks_and_nacks(ps):
    topic, dead = ps.topic(), ps.topic("topic-dead")
    policy = {"dead_letter_topic": dead, "max_delivery_attempts": 5}
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=60, dead_letter_policy=policy)
    stream = ps.stream(sub)
    ps.publish(topic, b"a", b"b")
    first = stream.take(2)
    assert sorted(m.message.data for m in first) == [b"a", b"b"]
    assert [m.delivery_attempt for m in first] == [1, 1]
    nacked, acked = first
    stream.send(ack_ids=[acked.ack_id])
    stream.send(modify_deadline_ack_ids=[nacked.ack_id], modify_deadline_seconds=[0])
    (again,) = stream.take(1)
    assert again.message.message_id == nacked.message.message_id
    assert again.delivery_attempt == 2
    stream.send(ack_ids=[again.ack_id])
    time.sleep(0.5)
    assert stream.take(1, timeout=0.5) == []
    assert ps.pull_now(sub) == []


def test_stream_ack_deadline_overrides_the_subscription(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=1)
    stream = ps.stream(sub, deadline=10)
    ps.publish(topic, b"x")
    assert len(stream.take(1)) == 1
    # The subscription's 1 s would have expired by now; the stream's 10 s has not.
    time.sleep(2.5)
    assert stream.take(1, timeout=0.1) == []
    assert ps.pull_now(sub) == []


def test_stream_leases_outlive_the_stream(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=30)
    stream = ps.stream(sub, deadline=20)
    ps.publish(topic, b"x")
    assert len(stream.take(1)) == 1
    stream.close()
    time.sleep(1)
    assert ps.pull_now(sub) == []


def test_stream_invalid_requests(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    cases = [
        (ps.sub_path("missing"), 10, exceptions.NotFound),
        (sub, 0, exceptions.InvalidArgument),
        (sub, 5, exceptions.InvalidArgument),
        (sub, 601, exceptions.InvalidArgument),
        ("", 10, exceptions.InvalidArgument),
    ]
    for name, deadline, error in cases:
        stream = ps.stream(name, deadline=deadline)
        assert isinstance(stream.wait_error(), error), (name, deadline, stream.error)


def test_stream_ends_on_a_bad_ack_id(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    stream = ps.stream(sub)
    stream.send(ack_ids=["garbage"])
    assert isinstance(stream.wait_error(), exceptions.InvalidArgument)


def test_deleting_the_subscription_ends_its_streams(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    stream = ps.stream(sub)
    time.sleep(0.5)
    ps.sub.delete_subscription(subscription=sub)
    assert isinstance(stream.wait_error(), exceptions.NotFound)


def test_server_side_flow_control(ps):
    """Ours honours max_outstanding_messages/bytes on the stream; Google's emulator ignores them."""
    topic = ps.topic()
    by_count = ps.subscription("sub-count", topic, ack_deadline_seconds=30)
    by_bytes = ps.subscription("sub-bytes", topic, ack_deadline_seconds=30)
    ps.publish(topic, *[b"z" * 1000] * 10)
    count_stream = ps.stream(by_count, max_outstanding_messages=3)
    bytes_stream = ps.stream(by_bytes, max_outstanding_bytes=2500)
    got_count = count_stream.take(10, timeout=2)
    got_bytes = bytes_stream.take(10, timeout=1)
    if ps.kind == "google":
        assert (len(got_count), len(got_bytes)) == (10, 10)
        return
    assert (len(got_count), len(got_bytes)) == (3, 3)
    # Acknowledging opens the window again.
    count_stream.send(ack_ids=[m.ack_id for m in got_count])
    assert len(count_stream.take(3, timeout=2)) == 3


def test_a_new_stream_gets_what_was_nacked_after_the_last_one_ended(ps, request):
    """A client that shuts down nacks what it did not process after its stream closed, and
    the next subscriber opens a new stream: ours sends those messages on it at once. Google's
    emulator mostly leases them to the new stream without sending them, so neither it nor
    Pull sees them until the lease runs out, which fails google-cloud-pubsub's own system test
    test_streaming_pull_blocking_shutdown on it (`make pubsub-system-tests`). It is a race
    there, sometimes won, so on Google's emulator this is an expected failure, not a strict one."""
    if ps.kind == "google":
        request.applymarker(pytest.mark.xfail(reason="Google's emulator holds them back"))
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=60)
    ps.publish(topic, b"x")
    first = ps.stream(sub, deadline=60)
    received = first.take(1)
    assert len(received) == 1
    first.close()
    first.wait_error()
    ps.nack(sub, received)
    again = ps.stream(sub, deadline=60).take(1, timeout=3)
    assert [(m.message.data, m.delivery_attempt) for m in again] == [(b"x", 0)]
    assert ps.pull_now(sub) == []
