"""Idempotent creation of the pipeline's resources: topics, subscriptions and bucket.

Terraform owns these in production; `taskctl bootstrap` creates the same shape on the
emulators (or in a scratch project), and running it twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1, storage
from google.protobuf import duration_pb2

from taskcore.clients import storage_client
from taskcore.errors import ConfigurationError
from taskcore.settings import DEFAULT_QUEUE, Settings
from taskcore.tasks import load_task_modules

log = logging.getLogger(__name__)

RETENTION_SECONDS = 7 * 24 * 3600
# The longest retention Pub/Sub allows: dead letters wait for an operator.
DLQ_RETENTION_SECONDS = 7 * 24 * 3600


@dataclass
class BootstrapReport:
    """What bootstrap created and what already existed."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def _ensure(report: BootstrapReport, name: str, create) -> None:
    try:
        create()
        report.created.append(name)
    except gexc.AlreadyExists:
        report.existing.append(name)
    except gexc.Conflict:  # GCS says 409 for a bucket that exists
        report.existing.append(name)


def worker_subscription_request(settings: Settings, queue: str = DEFAULT_QUEUE) -> dict:
    """The worker subscription's shape: ack deadline and dead-letter policy.

    No retry policy: the worker applies the backoff itself (modifyAckDeadline to the delay),
    from its own count of the task's failures, so backoff behaves the same on Pub/Sub and on
    both emulators (Google's ignores retry-policy backoff, and with a retry policy it was
    seen to lose messages whose lease expired two or three times).
    """
    return {
        "name": settings.subscription_path_for(queue),
        "topic": settings.topic_path_for(queue),
        "ack_deadline_seconds": settings.ack_deadline_seconds,
        "message_retention_duration": duration_pb2.Duration(seconds=RETENTION_SECONDS),
        "dead_letter_policy": {
            "dead_letter_topic": settings.dlq_topic_path,
            # A safety net far above the task's own MAX_DELIVERY_ATTEMPTS: deliveries lost to
            # crashes count here too, and only the task's own failures may dead-letter it.
            "max_delivery_attempts": settings.pubsub_max_delivery_attempts,
        },
    }


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))


def bootstrap(
    settings: Settings,
    *,
    publisher: pubsub_v1.PublisherClient | None = None,
    subscriber: pubsub_v1.SubscriberClient | None = None,
    gcs: storage.Client | None = None,
    queues: Iterable[str] | None = None,
) -> BootstrapReport:
    """Create the DLQ topic and subscription, each queue's topic and worker subscription (the
    default queue's and every queue TASK_MODULES declare, unless `queues` are given), and the
    bucket, if missing."""
    if queues is None:
        queues = load_task_modules(settings.task_modules).queues()
    queues = sorted({DEFAULT_QUEUE, *queues})
    clash = [q for q in queues if settings.topic_name_for(q) == settings.dlq_topic_name]
    if clash:
        # Its tasks would be published straight into the dead-letter queue.
        raise ConfigurationError(
            f"queue {clash[0]!r} would use topic {settings.dlq_topic_name!r}, the dead-letter "
            "topic: rename the queue (or DLQ_TOPIC_NAME)"
        )
    publisher = publisher or pubsub_v1.PublisherClient()
    subscriber = subscriber or pubsub_v1.SubscriberClient()
    gcs = gcs or storage_client(settings)
    report = BootstrapReport()
    # The DLQ topic and its subscription come first: a dead-letter topic without a
    # subscription silently loses what is dead-lettered to it.
    _ensure(
        report,
        settings.dlq_topic_path,
        lambda: publisher.create_topic(name=settings.dlq_topic_path),
    )
    _ensure(
        report,
        settings.dlq_subscription_path,
        lambda: subscriber.create_subscription(
            request={
                "name": settings.dlq_subscription_path,
                "topic": settings.dlq_topic_path,
                "ack_deadline_seconds": 60,
                "message_retention_duration": duration_pb2.Duration(seconds=DLQ_RETENTION_SECONDS),
            }
        ),
    )
    for queue in queues:
        topic = settings.topic_path_for(queue)
        _ensure(report, topic, lambda topic=topic: publisher.create_topic(name=topic))
        request = worker_subscription_request(settings, queue)
        _ensure(
            report,
            request["name"],
            lambda request=request: subscriber.create_subscription(request=request),
        )
    _ensure(report, f"gs://{settings.bucket_name}", lambda: gcs.create_bucket(settings.bucket_name))
    log.info(
        "bootstrap done: %d created, %d existing",
        len(report.created),
        len(report.existing),
        extra={"json_fields": {"created": report.created, "existing": report.existing}},
    )
    return report
