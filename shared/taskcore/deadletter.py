"""Dead letters: what the worker publishes to the DLQ topic, and the attributes that say why.

A dead letter carries the original data and attributes plus error_type, error_message,
failed_at, delivery_attempt, task_id/task_type, source_subscription and dead_letter_key.
Messages that Pub/Sub dead-lettered on its own (crash, lease expiry) carry its
CloudPubSubDeadLetter* attributes instead; `describe_dead_letter` reads both kinds.

Pub/Sub has no idempotent publish: a worker that dies between publishing a dead letter and
recording it published leaves the next delivery to publish it again. So every dead letter
names the death it reports, `dead_letter_key` (the task and its life: task_id and
replay_count), and the DLQ tools treat the letters of one key as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from taskcore.publishing import MAX_ATTRIBUTE_VALUE_BYTES, MAX_ATTRIBUTES, Publisher, truncate_utf8

# Attributes the worker adds when it dead-letters; replay strips them again.
ERROR_ATTRIBUTES = (
    "error_type",
    "error_message",
    "failed_at",
    "delivery_attempt",
    "source_subscription",
    "dead_lettered_by",
    "dead_letter_key",
)
PUBSUB_DEAD_LETTER_PREFIX = "CloudPubSubDeadLetterSource"
DEAD_LETTER_KEY = "dead_letter_key"
# Attributes the worker sets on a message it re-publishes before Pub/Sub's delivery limit:
# the message it replaces, and how many deliveries of the task no run settled so far (the
# task may have killed those executions, so its fresh copy still runs isolated). A replay
# starts a new life and strips them.
REFRESHED_FROM = "refreshed_from"
UNSETTLED_DELIVERIES = "unsettled_deliveries"
REFRESH_ATTRIBUTES = (REFRESHED_FROM, UNSETTLED_DELIVERIES)


def dead_letter_key(task_id: str | None, replay_count: str | None, message_id: str) -> str:
    """What identifies one death: the task's id and life, else (no task id) the message's id.

    A task dies at most once per life (a replay starts the next one), so any two dead
    letters with one key are copies of the same death.
    """
    if task_id:
        return f"{task_id}#{replay_count or '0'}"
    return f"msg-{message_id}"


def dead_letter_attributes(
    original: Mapping[str, str],
    *,
    error_type: str,
    error_message: str,
    delivery_attempt: int | None,
    source_subscription: str,
    task_fields: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The original attributes plus the reason, each value cut to Pub/Sub's limits."""
    reason = {
        "error_type": error_type,
        "error_message": truncate_utf8(error_message or "(no message)", MAX_ATTRIBUTE_VALUE_BYTES),
        "failed_at": datetime.now(UTC).isoformat(),
        "delivery_attempt": str(delivery_attempt or 0),
        "source_subscription": source_subscription,
        "dead_lettered_by": "worker",
    }
    for key, value in (task_fields or {}).items():
        if value:
            reason[key] = truncate_utf8(str(value))
    task_id = reason.get("task_id") or original.get("task_id")
    if task_id:
        # Without a task id the key is the dead letter's own message id (`dead_letter_key`),
        # which is only known once published: the attribute is left out then.
        key = dead_letter_key(task_id, original.get("replay_count"), "")
        reason[DEAD_LETTER_KEY] = truncate_utf8(key)
    kept = {k: v for k, v in original.items() if k not in reason}
    # Our reason must fit: drop surplus original attributes rather than the reason.
    room = MAX_ATTRIBUTES - len(reason)
    kept = dict(list(kept.items())[:room])
    return {**kept, **reason}


def dead_letter(
    publisher: Publisher,
    data: bytes,
    attributes: Mapping[str, str],
    *,
    error_type: str,
    error_message: str,
    delivery_attempt: int | None,
    task_fields: Mapping[str, str] | None = None,
) -> str:
    """Publish the message to the DLQ topic with its reason; returns the DLQ message id."""
    settings = publisher.settings
    attrs = dead_letter_attributes(
        attributes,
        error_type=error_type,
        error_message=error_message,
        delivery_attempt=delivery_attempt,
        source_subscription=settings.subscription_path,
        task_fields=task_fields,
    )
    return publisher.publish(settings.dlq_topic_path, data, attrs)


def describe_dead_letter(attributes: Mapping[str, str]) -> dict[str, str | int | None]:
    """Why and when a DLQ message died, whether the worker or Pub/Sub dead-lettered it."""
    if attributes.get("dead_lettered_by") == "worker":
        return {
            "error_type": attributes.get("error_type"),
            "error_message": attributes.get("error_message"),
            "delivery_attempt": int(attributes.get("delivery_attempt") or 0),
            "source_subscription": attributes.get("source_subscription"),
            "failed_at": attributes.get("failed_at"),
        }
    return {
        "error_type": "delivery_attempts_exhausted",
        "error_message": "delivery attempts exhausted",
        "delivery_attempt": int(attributes.get(f"{PUBSUB_DEAD_LETTER_PREFIX}DeliveryCount") or 0),
        "source_subscription": attributes.get(f"{PUBSUB_DEAD_LETTER_PREFIX}Subscription"),
        "failed_at": None,
    }
