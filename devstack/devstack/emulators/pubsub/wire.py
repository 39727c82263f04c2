"""Raw protobuf classes and hand-built wire encodings of the hot responses."""

from __future__ import annotations

import grpc
from google.pubsub_v1.types import pubsub as _types

from devstack.grpc_errors import ApiError as ApiError
from devstack.grpc_errors import invalid as invalid

Topic = _types.Topic.pb()
Subscription = _types.Subscription.pb()
PubsubMessage = _types.PubsubMessage.pb()
PublishRequest = _types.PublishRequest.pb()
PublishResponse = _types.PublishResponse.pb()
GetTopicRequest = _types.GetTopicRequest.pb()
UpdateTopicRequest = _types.UpdateTopicRequest.pb()
ListTopicsRequest = _types.ListTopicsRequest.pb()
ListTopicsResponse = _types.ListTopicsResponse.pb()
ListTopicSubscriptionsRequest = _types.ListTopicSubscriptionsRequest.pb()
ListTopicSubscriptionsResponse = _types.ListTopicSubscriptionsResponse.pb()
DeleteTopicRequest = _types.DeleteTopicRequest.pb()
GetSubscriptionRequest = _types.GetSubscriptionRequest.pb()
UpdateSubscriptionRequest = _types.UpdateSubscriptionRequest.pb()
ListSubscriptionsRequest = _types.ListSubscriptionsRequest.pb()
ListSubscriptionsResponse = _types.ListSubscriptionsResponse.pb()
DeleteSubscriptionRequest = _types.DeleteSubscriptionRequest.pb()
ModifyAckDeadlineRequest = _types.ModifyAckDeadlineRequest.pb()
AcknowledgeRequest = _types.AcknowledgeRequest.pb()
PullRequest = _types.PullRequest.pb()
StreamingPullRequest = _types.StreamingPullRequest.pb()
SeekRequest = _types.SeekRequest.pb()
SeekResponse = _types.SeekResponse.pb()
Snapshot = _types.Snapshot.pb()
CreateSnapshotRequest = _types.CreateSnapshotRequest.pb()
GetSnapshotRequest = _types.GetSnapshotRequest.pb()
ListSnapshotsRequest = _types.ListSnapshotsRequest.pb()
ListSnapshotsResponse = _types.ListSnapshotsResponse.pb()
UpdateSnapshotRequest = _types.UpdateSnapshotRequest.pb()
DeleteSnapshotRequest = _types.DeleteSnapshotRequest.pb()
ListTopicSnapshotsRequest = _types.ListTopicSnapshotsRequest.pb()
ListTopicSnapshotsResponse = _types.ListTopicSnapshotsResponse.pb()


def not_found(message: str) -> ApiError:
    """A NOT_FOUND error."""
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ApiError:
    """A FAILED_PRECONDITION error."""
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message)


# Varints below 2**14 cover every length and delivery count we emit; cache them.
_VARINT = []
for _n in range(1 << 14):
    _VARINT.append(bytes([_n]) if _n < 0x80 else bytes([(_n & 0x7F) | 0x80, _n >> 7]))


def varint(n: int) -> bytes:
    """Protobuf base-128 encoding of a non-negative int."""
    if n < 16384:
        return _VARINT[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def received_message(ack_id: bytes, message: bytes, attempt: int) -> bytes:
    """One `received_messages` entry (field 1) of a Pull/StreamingPull response, encoded.

    Messages are stored serialized, so a response is concatenation, never a copy into
    new protobuf objects.
    """
    body = b"".join(
        (
            b"\x0a",
            varint(len(ack_id)),
            ack_id,
            b"\x12",
            varint(len(message)),
            message,
            b"\x18" + varint(attempt) if attempt else b"",
        )
    )
    return b"\x0a" + varint(len(body)) + body


def subscription_properties(exactly_once: bool, ordering: bool) -> bytes:
    """The `subscription_properties` field (4) of a StreamingPullResponse, encoded."""
    body = (b"\x08\x01" if exactly_once else b"") + (b"\x10\x01" if ordering else b"")
    return b"\x22" + varint(len(body)) + body if body else b""


def serialize(response) -> bytes:
    """Response serializer accepting both protobuf messages and pre-encoded bytes."""
    if type(response) is bytes:
        return response
    return response.SerializeToString()
