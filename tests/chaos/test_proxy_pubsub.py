"""FaultProxy carrying gRPC (HTTP/2) between Pub/Sub clients and the real emulator."""

from __future__ import annotations

import threading
import time

import pytest
from google.api_core import exceptions as gexc

from tests.chaos.conftest import PubSubThroughProxy
from tests.chaos.waiting import eventually, wait_until

pytestmark = pytest.mark.integration


def test_publish_and_pull_pass_through_the_proxy(pipeline_settings, pubsub_via_proxy, pubsub_proxy):
    sent = [f"message {i}".encode() for i in range(5)]
    for data in sent:
        pubsub_via_proxy.publish(pipeline_settings.topic_path, data)

    received = eventually(lambda: pubsub_via_proxy.pull(pipeline_settings.subscription_path))

    assert sorted(received) == sorted(sent)
    stats = pubsub_proxy.stats()
    assert stats.connections_accepted == 1  # one HTTP/2 connection carries every call
    assert stats.bytes_to_upstream > 0 and stats.bytes_to_client > 0


def test_blackhole_makes_calls_time_out_and_they_pass_again_after(
    pipeline_settings, pubsub_via_proxy, pubsub_proxy
):
    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"before")  # connection open
    pubsub_proxy.blackhole()

    started = time.monotonic()
    with pytest.raises(gexc.DeadlineExceeded):
        pubsub_via_proxy.publish(pipeline_settings.topic_path, b"during", timeout=1.0)
    assert time.monotonic() - started >= 0.9

    fresh = PubSubThroughProxy(pubsub_proxy.address)  # a new connection is accepted, then held
    try:
        with pytest.raises(gexc.DeadlineExceeded):
            fresh.publish(pipeline_settings.topic_path, b"during, new connection", timeout=1.0)
    finally:
        fresh.close()

    pubsub_proxy.clear()
    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"after", timeout=5.0)
    assert pubsub_proxy.stats().faults["blackhole"].seconds >= 2.0


def test_blackhole_for_a_duration_ends_by_itself(pipeline_settings, pubsub_via_proxy, pubsub_proxy):
    pubsub_proxy.blackhole(duration=0.5)
    started = time.monotonic()

    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"held, then delivered", timeout=5.0)

    assert time.monotonic() - started >= 0.45
    assert pubsub_proxy.active_faults() == set()


def test_refuse_gives_unavailable_until_cleared(pipeline_settings, pubsub_via_proxy, pubsub_proxy):
    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"before")
    pubsub_proxy.refuse()

    with pytest.raises(gexc.ServiceUnavailable):  # the open connection was closed
        pubsub_via_proxy.publish(pipeline_settings.topic_path, b"during", timeout=2.0)
    fresh = PubSubThroughProxy(pubsub_proxy.address)
    try:
        with pytest.raises(gexc.ServiceUnavailable, match="(?i)refused"):
            fresh.publish(pipeline_settings.topic_path, b"during, new connection", timeout=2.0)
    finally:
        fresh.close()
    assert pubsub_proxy.stats().connections_closed_by_refuse == 1

    pubsub_proxy.clear()
    # gRPC waits out its reconnect backoff (about 1 s) before it tries the address again.
    eventually(lambda: pubsub_via_proxy.publish(pipeline_settings.topic_path, b"after"))


def test_delay_adds_at_least_the_delay_each_way(pipeline_settings, pubsub_via_proxy, pubsub_proxy):
    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"warm-up")
    pubsub_proxy.delay(0.3, 0.2)

    started = time.monotonic()
    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"delayed", timeout=5.0)
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 2.0
    pubsub_proxy.clear("delay")
    started = time.monotonic()
    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"not delayed")
    assert time.monotonic() - started < 0.5


def test_reset_breaks_an_in_flight_call_then_traffic_passes_again(
    pipeline_settings, pubsub_via_proxy, pubsub_proxy
):
    pubsub_via_proxy.publish(pipeline_settings.topic_path, b"warm-up")
    pubsub_proxy.delay(0.0, 5.0)  # the answer waits in the proxy: the call stays in flight
    sent_before = pubsub_proxy.stats().bytes_to_upstream
    outcome: dict = {}

    def publish() -> None:
        started = time.monotonic()
        try:
            pubsub_via_proxy.publish(pipeline_settings.topic_path, b"in flight", timeout=10.0)
        except Exception as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=publish)
    caller.start()
    # The request went up (one HTTP/2 write) and an answer waits in the proxy: in flight.
    wait_until(
        lambda: (
            (stats := pubsub_proxy.stats()).held_to_client > 0
            and stats.bytes_to_upstream > sent_before
        ),
        "the request sent and its answer held",
    )
    assert pubsub_proxy.reset() == 1
    caller.join(timeout=10)

    assert isinstance(outcome.get("error"), gexc.ServiceUnavailable), outcome
    assert outcome["seconds"] < 3.0  # broken by the reset, not answered after the delay
    pubsub_proxy.clear()
    eventually(lambda: pubsub_via_proxy.publish(pipeline_settings.topic_path, b"after"))
    assert pubsub_proxy.stats().connections_reset == 1
