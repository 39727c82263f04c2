"""The backlog our Pub/Sub emulator reports through its Cloud Monitoring endpoint."""

from __future__ import annotations

import time

import pytest

from taskcore.backlog import BacklogReader
from taskcore.clients import subscriber_client
from tests.integration.helpers import publish_tasks

pytestmark = pytest.mark.integration


@pytest.fixture
def reader(pipeline):
    if not pipeline.monitoring_emulator_host:
        pytest.skip("Google's Pub/Sub emulator has no metrics: TASKCTL_PUBSUB_EMULATOR=python")
    return BacklogReader(pipeline)


def test_every_unacknowledged_message_counts_leased_or_waiting(pipeline, reader):
    publish_tasks(pipeline, [("data_transformation", {"dataset_size": 1})] * 4)
    time.sleep(1.1)  # so the oldest message is at least a second old
    subscriber = subscriber_client(pipeline)
    try:
        pulled = subscriber.pull(
            request={"subscription": pipeline.subscription_path, "max_messages": 2}, timeout=5
        ).received_messages
        subscriber.acknowledge(
            request={"subscription": pipeline.subscription_path, "ack_ids": [pulled[0].ack_id]}
        )
        # Handed back: it waits out the retry backoff, still owed to the subscription.
        subscriber.modify_ack_deadline(
            request={
                "subscription": pipeline.subscription_path,
                "ack_ids": [pulled[1].ack_id],
                "ack_deadline_seconds": 0,
            }
        )
    finally:
        subscriber.close()

    report = reader.read([pipeline.subscription_name, pipeline.dlq_subscription_name])

    main = report.subscriptions[pipeline.subscription_name]
    assert report.available and report.source == "emulator"
    assert main.undelivered == 3
    assert main.oldest_unacked_seconds >= 1
    assert report.subscriptions[pipeline.dlq_subscription_name].undelivered == 0


def test_an_unreachable_endpoint_is_reported_not_raised(pipeline):
    from devstack.emulators import free_port

    closed = pipeline.replace(monitoring_emulator_host=f"127.0.0.1:{free_port()}")

    report = BacklogReader(closed).read([pipeline.subscription_name])

    assert not report.available and "could not be read" in report.detail
