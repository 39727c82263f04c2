"""What the fault campaign found, each reduced to a deterministic test on the real emulators.

Each test plays the moment a campaign caught (named in its docstring) without any random
fault, and asserts the promise the checker found broken; each failed until its fix.
"""

from __future__ import annotations

import pytest

from background_worker.worker import drain_subscription
from chaos.stack import TASK_MODULES
from taskcore import lifecycle
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client, subscriber_client
from taskcore.deadletter import dead_letter
from taskcore.dlq.letters import DeadLetterFilter
from taskcore.dlq.scan import browse
from taskcore.errors import PublishError
from taskcore.lifecycle import Delivery
from taskcore.publishing import Publisher, publish_new_task
from taskcore.status import ErrorInfo, StatusStore, TaskState, utcnow
from taskcore.tasks import load_task_modules
from tests.integration.helpers import status_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# Pub/Sub's dead-letter policy in the tests that lose deliveries: low, so that they reach
# the worker's refresh point (half of it) and come near the limit itself.
SAFETY_NET = 10


@pytest.fixture
def registry():
    return load_task_modules(TASK_MODULES)


@pytest.fixture
def chaos_pipeline(settings):
    """The pipeline with the campaign's task modules (an isolated run's child loads them)."""
    chaos = settings.replace(task_modules=TASK_MODULES)
    bootstrap(chaos)
    return chaos


@pytest.fixture
def safety_net(settings):
    """The chaos pipeline with Pub/Sub's dead-letter policy at SAFETY_NET deliveries."""
    tight = settings.replace(task_modules=TASK_MODULES, pubsub_max_delivery_attempts=SAFETY_NET)
    bootstrap(tight)
    return tight


def publish_task(settings, registry, task_type: str, fields: dict):
    """Publish one task to the task topic; (envelope, data, attributes)."""
    envelope = publish_new_task(settings, registry, task_type, fields)
    return envelope, *envelope.to_message()


def dead_letters_of(settings, task_id: str) -> list:
    listing = browse(settings, DeadLetterFilter(task_ids=frozenset({task_id})))
    return listing.shown


def lose_deliveries(settings, count: int) -> None:
    """Pull the one message `count` times and hand it back each time unacked, as executions
    that died holding it would (their leases lapse; a nack only makes it quicker)."""
    subscriber = subscriber_client(settings)
    try:
        lost = 0
        while lost < count:
            response = subscriber.pull(
                request={"subscription": settings.subscription_path, "max_messages": 1},
                timeout=10,
            )
            for received in response.received_messages:
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": settings.subscription_path,
                        "ack_ids": [received.ack_id],
                        "ack_deadline_seconds": 0,
                    }
                )
                lost += 1
    finally:
        subscriber.close()


class TopicDown(Publisher):
    """A publisher whose publishes to the task topic fail (Pub/Sub unreachable for them)."""

    def publish(self, topic_path, data, attributes):
        if topic_path == self.settings.topic_path:
            raise PublishError(f"publish to {topic_path} failed: DeadlineExceeded")
        return super().publish(topic_path, data, attributes)


def test_a_crash_between_the_dead_letter_publish_and_its_confirmation_leaves_one_dead_letter(
    pipeline, registry
):
    """Seed 2 (python emulator, 2,000 tasks): chaos-exec-00012 was SIGKILLed 0.15 s after it
    dead-lettered chaos_permanent task 24243bc8…: its dead letter (DLQ message 838) had
    landed, its record still said `pending`; the redelivery (delivery 4, chaos-exec-00040)
    published a second one (1645). Here the crashed run's two writes are made by hand."""
    envelope, data, attributes = publish_task(pipeline, registry, "chaos_permanent", {"tag": "f1"})
    task_id = envelope.task_id
    store = StatusStore(make_bucket(pipeline, storage_client(pipeline)))
    delivery = Delivery(task_id, "chaos_permanent", "crashed-delivery")
    error = ErrorInfo(type="chaos_permanent", message="this task can never succeed", attempt=1)
    store.transition(
        task_id,
        lifecycle.fail(
            delivery,
            "1-crashed",
            "crashed-exec",
            1,
            error,
            utcnow(),
            permanent=True,
            max_failures=5,
        ),
    )
    publisher = Publisher(pipeline)
    try:
        dead_letter(
            publisher,
            data,
            attributes,
            error_type=error.type,
            error_message=error.message,
            delivery_attempt=1,
            task_fields={"task_id": task_id, "task_type": "chaos_permanent"},
        )
    finally:
        publisher.close()
    # ... and the execution died here, before recording that the dead letter was published.

    drain_subscription(pipeline, task_types=registry)

    assert status_of(pipeline, task_id).state == TaskState.DEAD_LETTERED
    assert len(dead_letters_of(pipeline, task_id)) == 1


def test_a_delivery_whose_refresh_cannot_be_published_is_run_not_handed_to_pubsub(
    safety_net, registry
):
    """Seed 2 (python emulator, 2,000 tasks): chaos_flaky task bc8c675f… had failed 3 times of
    its own; on its 5th delivery chaos-exec-00039 logged "could not re-publish a message on
    its last delivery: … Timeout" and released it; Pub/Sub forwarded it to the DLQ
    (delivery_attempts_exhausted) and the record stayed `retrying` after 3 failures. Here the
    refresh point (delivery 5 of 10) comes with the topic down, and it stays down: handing
    the message back would only spend deliveries until Pub/Sub's limit; the task runs."""
    pipeline = safety_net
    envelope, _, _ = publish_task(pipeline, registry, "chaos_quick", {"tag": "f2"})
    lose_deliveries(pipeline, 4)  # four executions died holding it

    drain_subscription(pipeline, task_types=registry, publisher=TopicDown(pipeline))

    assert dead_letters_of(pipeline, envelope.task_id) == []
    assert status_of(pipeline, envelope.task_id).state == TaskState.SUCCEEDED


def test_a_task_whose_deliveries_were_lost_to_crashes_still_runs(chaos_pipeline, registry):
    """Seed 2 (python emulator, 2,000 tasks): chaos_flaky task 8a44e21f… failed once of its
    own (delivery 2); deliveries 3-5 went to executions that were killed; Pub/Sub forwarded
    it to the DLQ (delivery_attempts_exhausted) and a browse made its record say so. Here
    with the settings' default safety net (PUBSUB_MAX_DELIVERY_ATTEMPTS)."""
    pipeline = chaos_pipeline
    envelope, _, _ = publish_task(pipeline, registry, "chaos_quick", {"tag": "f3"})
    lose_deliveries(pipeline, 5)  # five executions died holding it, the task blameless

    drain_subscription(pipeline, task_types=registry)

    assert dead_letters_of(pipeline, envelope.task_id) == []
    assert status_of(pipeline, envelope.task_id).state == TaskState.SUCCEEDED


def test_a_task_whose_deliveries_were_lost_up_to_pubsubs_limit_keeps_its_own_attempts(
    safety_net, registry
):
    """The same up to the safety net's last delivery (9 of 10 lost), for a task that then
    fails twice of its own: the worker swaps the message for a fresh one before running it,
    so its failures are retried and Pub/Sub never forwards it. The fresh copy still runs
    isolated: the task may have killed the executions that lost it."""
    pipeline = safety_net
    envelope, _, _ = publish_task(
        pipeline, registry, "chaos_flaky", {"tag": "f3", "fail_first": 2, "seconds": 0}
    )
    lose_deliveries(pipeline, SAFETY_NET - 1)

    drain_subscription(pipeline, task_types=registry)

    assert dead_letters_of(pipeline, envelope.task_id) == []
    status = status_of(pipeline, envelope.task_id)
    assert status.state == TaskState.SUCCEEDED
    assert status.failures == 2 and status.interruptions >= 1
