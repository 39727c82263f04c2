"""Resource names and subscription settings, checked the way Google's emulator checks them."""

from __future__ import annotations

import re

import grpc

from devstack.emulators.pubsub.wire import ApiError, Subscription, invalid, not_found

# Resource ids: 3-255 characters, a letter first, then letters, digits and -_.~+%.
_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_TOPIC_RE = re.compile(rf"projects/([^/]+)/topics/({_ID})")
_SUB_RE = re.compile(rf"projects/([^/]+)/subscriptions/({_ID})")
_SNAPSHOT_RE = re.compile(rf"projects/([^/]+)/snapshots/({_ID})")
# Every collection whose members carry an IAM policy in Pub/Sub.
_IAM_RESOURCE_RE = re.compile(rf"projects/[^/]+/(topics|subscriptions|snapshots|schemas)/({_ID})")

DEFAULT_ACK_DEADLINE = 10
MAX_ACK_DEADLINE = 600
DEFAULT_RETENTION = 7 * 24 * 3600
MIN_RETENTION = 600
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
MIN_MAX_DELIVERY_ATTEMPTS = 5
MAX_MAX_DELIVERY_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = 10
DEFAULT_MAX_BACKOFF = 600
MAX_BACKOFF = 600
DELETED_TOPIC = "_deleted-topic_"

MUTABLE_SUBSCRIPTION_FIELDS = frozenset(
    {
        "ack_deadline_seconds",
        "push_config",
        "bigquery_config",
        "cloud_storage_config",
        "retain_acked_messages",
        "message_retention_duration",
        "labels",
        "expiration_policy",
        "dead_letter_policy",
        "retry_policy",
        "detached",
        "enable_exactly_once_delivery",
    }
)
IMMUTABLE_SUBSCRIPTION_FIELDS = frozenset(
    {"name", "topic", "filter", "enable_message_ordering", "topic_message_retention_duration"}
)


def _check_name(pattern: re.Pattern, collection: str, name: str) -> str:
    if not pattern.fullmatch(name) or name.rpartition("/")[2].startswith("goog"):
        raise invalid(f"Invalid [{collection}] name: (name={name})")
    return name


def check_topic_name(name: str) -> str:
    """The name itself if it is a valid topic name, else INVALID_ARGUMENT."""
    return _check_name(_TOPIC_RE, "topics", name)


def check_subscription_name(name: str) -> str:
    """The name itself if it is a valid subscription name, else INVALID_ARGUMENT."""
    return _check_name(_SUB_RE, "subscriptions", name)


def check_snapshot_name(name: str) -> str:
    """The name itself if it is a valid snapshot name, else INVALID_ARGUMENT."""
    return _check_name(_SNAPSHOT_RE, "snapshots", name)


def iam_resource_kind(name: str) -> str:
    """'topics', 'subscriptions', 'snapshots' or 'schemas' for a valid resource name, else
    INVALID_ARGUMENT."""
    match = _IAM_RESOURCE_RE.fullmatch(name)
    if match is None or match.group(2).startswith("goog"):
        raise invalid(f"Invalid resource name given (name={name}).")
    return match.group(1)


def _out_of_range(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.OUT_OF_RANGE, message)


def normalize_subscription(sub: Subscription, topic_exists) -> None:
    """Validate a subscription's settings and fill Google's defaults in place.

    topic_exists(name) tells whether a topic exists (for the dead-letter topic).
    """
    if sub.ack_deadline_seconds == 0:
        sub.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
    if not 0 < sub.ack_deadline_seconds <= MAX_ACK_DEADLINE:
        raise invalid("ack_deadline_secs out of bounds")
    if not sub.HasField("message_retention_duration"):
        sub.message_retention_duration.seconds = DEFAULT_RETENTION
    retention = sub.message_retention_duration.ToTimedelta().total_seconds()
    if not MIN_RETENTION <= retention <= DEFAULT_RETENTION:
        raise invalid("message_retention_duration out of bounds")
    if sub.HasField("dead_letter_policy"):
        _normalize_dead_letter(sub, topic_exists)
    if sub.HasField("retry_policy"):
        _normalize_retry(sub)
    if sub.push_config.push_endpoint:
        raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "push subscriptions are not supported")
    if sub.filter:
        raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "subscription filters are not supported")
    # Google's emulator answers with an empty push_config present; so do we.
    sub.push_config.SetInParent()


def _normalize_dead_letter(sub: Subscription, topic_exists) -> None:
    policy = sub.dead_letter_policy
    if not policy.dead_letter_topic or not topic_exists(policy.dead_letter_topic):
        raise not_found("Dead letter topic not found")
    if policy.max_delivery_attempts == 0:
        policy.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS
    attempts = policy.max_delivery_attempts
    if attempts < MIN_MAX_DELIVERY_ATTEMPTS:
        raise _out_of_range(
            f"The value for max_delivery_attempts is too small. You passed {attempts} in the "
            f"request, but the minimum value is {MIN_MAX_DELIVERY_ATTEMPTS}."
        )
    if attempts > MAX_MAX_DELIVERY_ATTEMPTS:
        raise _out_of_range(
            f"The value for max_delivery_attempts is too large. You passed {attempts} in the "
            f"request, but the maximum value is {MAX_MAX_DELIVERY_ATTEMPTS}."
        )


def _seconds_text(duration) -> str:
    seconds = duration.ToTimedelta().total_seconds()
    return f"{seconds:g}s"


def _normalize_retry(sub: Subscription) -> None:
    policy = sub.retry_policy
    if not policy.HasField("minimum_backoff"):
        policy.minimum_backoff.seconds = DEFAULT_MIN_BACKOFF
    if not policy.HasField("maximum_backoff"):
        policy.maximum_backoff.seconds = DEFAULT_MAX_BACKOFF
    for field in ("minimum_backoff", "maximum_backoff"):
        value = getattr(policy, field)
        if not 0 <= value.ToTimedelta().total_seconds() <= MAX_BACKOFF:
            raise invalid(
                f"The value for {field} is out of bounds. You passed {_seconds_text(value)} in "
                f"the request, but the value must be between 0s and {MAX_BACKOFF}s."
            )
    low, high = policy.minimum_backoff, policy.maximum_backoff
    if high.ToTimedelta() < low.ToTimedelta():
        raise invalid(
            f"The value for maximum_backoff is too small. You passed {_seconds_text(high)} in "
            f"the request, but the minimum value is {_seconds_text(low)}."
        )


def check_update_mask(paths) -> None:
    """INVALID_ARGUMENT unless every path of an UpdateSubscription mask may be changed."""
    if not paths:
        raise invalid(
            "The update_mask in the UpdateSubscriptionRequest must be set, and must contain a "
            "non-empty paths list."
        )
    for path in paths:
        if path in IMMUTABLE_SUBSCRIPTION_FIELDS:
            raise invalid(
                "Invalid update_mask provided in the UpdateSubscriptionRequest: the "
                f"{path} field in the Subscription is not mutable."
            )
        if path not in MUTABLE_SUBSCRIPTION_FIELDS:
            raise invalid(
                "Invalid update_mask provided in the UpdateSubscriptionRequest: "
                f"{path} is not a known Subscription field. Note that field paths must be of "
                "the form 'push_config' rather than 'pushConfig'."
            )
