"""Helpers for the dead-letter tests: seed the DLQ, run `taskctl dlq`, count runs and objects."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner, Result

from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.deadletter import PUBSUB_DEAD_LETTER_PREFIX, dead_letter_attributes
from taskcore.dlq.letters import DeadLetterFilter
from taskcore.dlq.scan import browse
from taskcore.envelope import build_envelope
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import StatusStore
from taskctl.main import main
from tests.integration.helpers import settings_env
from tests.registries import builtin_registry


def seed_dead_letters(
    settings: Settings,
    count: int,
    *,
    task_type: str = "data_transformation",
    fields: dict | None = None,
    error_type: str = "RuntimeError",
    error_message: str = "backend said no",
    failed_at: datetime | None = None,
    spacing: timedelta = timedelta(0),
) -> list[str]:
    """Publish `count` valid tasks straight to the DLQ topic as the worker would; their ids."""
    registry = builtin_registry()
    fields = fields if fields is not None else {"dataset_size": 5}
    publisher = Publisher(settings)
    futures, ids = [], []
    start = failed_at or datetime.now(UTC)
    try:
        for i in range(count):
            envelope, _ = build_envelope(registry, task_type, fields)
            data, original = envelope.to_message()
            attributes = dead_letter_attributes(
                original,
                error_type=error_type,
                error_message=error_message,
                delivery_attempt=5,
                source_subscription=settings.subscription_path,
                task_fields={"task_id": envelope.task_id, "task_type": task_type},
            )
            attributes["failed_at"] = (start + i * spacing).isoformat()
            futures.append(publisher.client.publish(settings.dlq_topic_path, data, **attributes))
            ids.append(envelope.task_id)
        for future in futures:
            future.result(timeout=30)
    finally:
        publisher.close()
    return ids


def seed_pubsub_dead_letter(
    settings: Settings, fields: dict, deliveries: int = 5, task_id: str | None = None
) -> str:
    """A dead letter as Pub/Sub itself forwards one (no worker reason); its task id."""
    envelope, _ = build_envelope(builtin_registry(), "data_transformation", fields, task_id)
    data, attributes = envelope.to_message()
    attributes.update(
        {
            f"{PUBSUB_DEAD_LETTER_PREFIX}DeliveryCount": str(deliveries),
            f"{PUBSUB_DEAD_LETTER_PREFIX}Subscription": settings.subscription_name,
            f"{PUBSUB_DEAD_LETTER_PREFIX}SubscriptionProject": settings.project_id,
        }
    )
    publisher = Publisher(settings)
    try:
        publisher.publish(settings.dlq_topic_path, data, attributes)
    finally:
        publisher.close()
    return envelope.task_id


def taskctl(settings: Settings, *args: str, input: str | None = None) -> Result:
    """Run `taskctl <args>` in-process with settings as its environment."""
    runner = CliRunner()
    return runner.invoke(main, list(args), env=settings_env(settings), input=input)


def dlq_json(settings: Settings, *filters: str) -> dict:
    """`taskctl dlq list --json [filters]`, parsed."""
    result = taskctl(settings, "dlq", "list", "--json", *filters)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def dlq_task_ids(settings: Settings) -> Counter:
    """Task ids in the DLQ right now (a browse: nothing is consumed)."""
    listing = browse(settings, DeadLetterFilter(everything=True))
    return Counter(letter.task_id for letter in listing.shown)


def counting_registry(runs: Counter):
    """The built-in task types, counting each task run that completed, by task id."""
    registry = builtin_registry()
    counted_handlers = {}
    for task_type in registry:

        def counted(ctx, payload, inner=task_type.handler):
            inner(ctx, payload)
            runs[ctx.task_id] += 1

        counted_handlers[task_type.name] = counted
    return registry.with_handlers(**counted_handlers)


def objects(settings: Settings, prefix: str) -> dict[str, bytes]:
    """Every object under prefix in the pipeline bucket, by name."""
    bucket = make_bucket(settings, storage_client(settings))
    return {blob.name: blob.download_as_bytes() for blob in bucket.list_blobs(prefix=prefix)}


def status_store(settings: Settings) -> StatusStore:
    """The status records of the pipeline bucket."""
    return StatusStore(make_bucket(settings, storage_client(settings)))


def audit_records(settings: Settings) -> list[dict]:
    """The audit trail, oldest first."""
    return [json.loads(data) for _, data in sorted(objects(settings, "audit/").items())]
