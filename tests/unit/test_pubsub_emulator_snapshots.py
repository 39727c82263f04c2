"""The pure-Python Pub/Sub emulator's snapshot lifetimes, on a broker in this process.

Lifetimes run in days, so these tests age messages and snapshots by hand instead of waiting;
tests/conformance/test_snapshots.py covers the rest over gRPC on both emulators.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.iam.v1 import iam_policy_pb2, policy_pb2

from devstack.emulators.pubsub.broker import Broker
from devstack.emulators.pubsub.snapshots import MIN_SNAPSHOT_LIFETIME, SNAPSHOT_LIFETIME
from devstack.emulators.pubsub.wire import ApiError, PubsubMessage, Subscription, Topic

TOPIC = "projects/p/topics/topic-main"
SUB = "projects/p/subscriptions/sub-main"
SNAPSHOT = "projects/p/snapshots/snap-main"


@pytest.fixture
def broker() -> Broker:
    broker = Broker()
    broker.create_topic(Topic(name=TOPIC))
    broker.create_subscription(Subscription(name=SUB, topic=TOPIC))
    return broker


def _age_backlog(broker: Broker, seconds: float) -> None:
    """Make every queued message of SUB look published seconds earlier."""
    for msg, _ in broker.subs[SUB].pending:
        msg.ts -= seconds


def test_a_snapshot_expires_seven_days_after_its_oldest_unacked_message(broker):
    broker.publish(TOPIC, [PubsubMessage(data=b"old")])
    _age_backlog(broker, 2 * 24 * 3600)
    before = time.time()
    snapshot = broker.create_snapshot(SNAPSHOT, SUB, {})
    lifetime = snapshot.expire_time.ToMilliseconds() / 1000 - before
    assert SNAPSHOT_LIFETIME - 2 * 24 * 3600 - 1 <= lifetime <= SNAPSHOT_LIFETIME - 2 * 24 * 3600


def test_a_snapshot_that_would_live_under_an_hour_is_refused(broker):
    broker.publish(TOPIC, [PubsubMessage(data=b"old")])
    _age_backlog(broker, SNAPSHOT_LIFETIME - MIN_SNAPSHOT_LIFETIME + 60)
    with pytest.raises(ApiError) as refused:
        broker.create_snapshot(SNAPSHOT, SUB, {})
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert SNAPSHOT not in broker.snapshots


def test_an_expired_snapshot_is_deleted_with_its_policy(broker):
    broker.create_snapshot(SNAPSHOT, SUB, {})
    policy = policy_pb2.Policy()
    policy.bindings.add(role="roles/pubsub.viewer", members=["user:ada@example.com"])
    broker.set_iam_policy(iam_policy_pb2.SetIamPolicyRequest(resource=SNAPSHOT, policy=policy))
    broker.trim()
    assert SNAPSHOT in broker.snapshots
    broker.snapshots[SNAPSHOT].expires = time.time() - 1
    broker.trim()
    assert SNAPSHOT not in broker.snapshots
    assert SNAPSHOT not in broker.policies
    assert broker.topic_snapshots[TOPIC] == []
    # Publishing goes on without it.
    assert broker.publish(TOPIC, [PubsubMessage(data=b"x")])
