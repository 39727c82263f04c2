"""The gRPC front: google.pubsub.v1.Publisher, Subscriber and google.iam.v1.IAMPolicy."""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from google.protobuf import empty_pb2

from devstack.emulators.pubsub import iam
from devstack.emulators.pubsub import wire as w
from devstack.emulators.pubsub.broker import Broker
from devstack.emulators.pubsub.wire import ApiError, invalid

log = logging.getLogger(__name__)

_EMPTY = empty_pb2.Empty()
# A blocking Pull answers this long before the caller's deadline, as Google's emulator does,
# so the client sees an empty response rather than DEADLINE_EXCEEDED.
_PULL_MARGIN = 0.5
_PULL_MAX_WAIT = 90.0
# How often a stream with nothing to send rechecks that its caller is still there.
_STREAM_POLL = 1.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _encode_received(sub, batch) -> bytes:
    prefix = sub.ack_prefix
    return b"".join(
        w.received_message(prefix + str(n).encode(), data, attempt) for n, data, attempt in batch
    )


class PubSubService:
    """RPC handlers; each turns ApiError into the matching gRPC status."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def _project_page(self, request, kind: str, response_type):
        items, token = self.broker.project_page(
            kind, request.project, request.page_size, request.page_token
        )
        return response_type(**{kind: items}, next_page_token=token)

    # Publisher

    def CreateTopic(self, request, context):
        return self.broker.create_topic(request)

    def GetTopic(self, request, context):
        return self.broker.get_topic(request.topic)

    def ListTopics(self, request, context):
        return self._project_page(request, "topics", w.ListTopicsResponse)

    def ListTopicSubscriptions(self, request, context):
        names, token = self.broker.list_topic_subscriptions(
            request.topic, request.page_size, request.page_token
        )
        return w.ListTopicSubscriptionsResponse(subscriptions=names, next_page_token=token)

    def DeleteTopic(self, request, context):
        self.broker.delete_topic(request.topic)
        return _EMPTY

    def Publish(self, request, context):
        ids = self.broker.publish(request.topic, request.messages)
        return w.PublishResponse(message_ids=ids)

    def ListTopicSnapshots(self, request, context):
        names, token = self.broker.list_topic_snapshots(
            request.topic, request.page_size, request.page_token
        )
        return w.ListTopicSnapshotsResponse(snapshots=names, next_page_token=token)

    # Subscriber

    def CreateSubscription(self, request, context):
        return self.broker.create_subscription(request)

    def GetSubscription(self, request, context):
        return self.broker.get_subscription(request.subscription)

    def UpdateSubscription(self, request, context):
        return self.broker.update_subscription(request.subscription, request.update_mask.paths)

    def ListSubscriptions(self, request, context):
        return self._project_page(request, "subscriptions", w.ListSubscriptionsResponse)

    def DeleteSubscription(self, request, context):
        self.broker.delete_subscription(request.subscription)
        return _EMPTY

    def Pull(self, request, context):
        wait = 0.0
        if not request.return_immediately:
            remaining = context.time_remaining()
            wait = _PULL_MAX_WAIT if remaining is None else remaining - _PULL_MARGIN
            wait = min(wait, _PULL_MAX_WAIT)
        sub, batch = self.broker.pull(request.subscription, request.max_messages, wait)
        return _encode_received(sub, batch)

    def Acknowledge(self, request, context):
        self.broker.acknowledge(request.subscription, request.ack_ids)
        return _EMPTY

    def ModifyAckDeadline(self, request, context):
        self.broker.modify_ack_deadline(
            request.subscription, request.ack_ids, request.ack_deadline_seconds
        )
        return _EMPTY

    def Seek(self, request, context):
        target = request.WhichOneof("target")
        if target == "time":
            self.broker.seek(request.subscription, request.time.ToNanoseconds() / 1e9)
            return w.SeekResponse()
        if target == "snapshot":
            self.broker.seek_to_snapshot(request.subscription, request.snapshot)
            return w.SeekResponse()
        self.broker.subscription(request.subscription)
        raise invalid(
            "No target was specified in the SeekRequest. Must specify either a time or a snapshot"
        )

    def CreateSnapshot(self, request, context):
        return self.broker.create_snapshot(request.name, request.subscription, request.labels)

    def GetSnapshot(self, request, context):
        return self.broker.get_snapshot(request.snapshot)

    def ListSnapshots(self, request, context):
        return self._project_page(request, "snapshots", w.ListSnapshotsResponse)

    def UpdateSnapshot(self, request, context):
        return self.broker.update_snapshot(request.snapshot, request.update_mask.paths)

    def DeleteSnapshot(self, request, context):
        self.broker.delete_snapshot(request.snapshot)
        return _EMPTY

    def StreamingPull(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None:
            return
        if not first.subscription:
            raise invalid("first message must set subscription")
        if not first.stream_ack_deadline_seconds:
            raise invalid("first message must set stream_ack_deadline_seconds")
        if not 10 <= first.stream_ack_deadline_seconds <= 600:
            raise invalid("stream_ack_deadline_seconds must be between 10 and 600 seconds")
        broker = self.broker
        stream = broker.open_stream(
            first.subscription,
            first.stream_ack_deadline_seconds,
            first.max_outstanding_messages,
            first.max_outstanding_bytes,
        )
        broker.stream_request(stream, first)
        context.add_callback(lambda: broker.close_stream(stream))
        reader = threading.Thread(
            target=self._read_stream, args=(stream, request_iterator), daemon=True
        )
        reader.start()
        sub = stream.sub
        properties = w.subscription_properties(
            sub.config.enable_exactly_once_delivery, sub.config.enable_message_ordering
        )
        while True:
            batch = broker.stream_next(stream, _STREAM_POLL)
            if batch is None:
                return
            if batch:
                yield _encode_received(sub, batch) + properties

    def _read_stream(self, stream, request_iterator) -> None:
        """Apply the client's acks and modacks as they arrive; end the stream on bad ones."""
        try:
            for request in request_iterator:
                self.broker.stream_request(stream, request)
        except ApiError as exc:
            self.broker.close_stream(stream, exc)
            return
        except Exception:  # the call ended under us (cancelled, server stopping)
            pass
        self.broker.close_stream(stream)

    # IAMPolicy

    def GetIamPolicy(self, request, context):
        return self.broker.get_iam_policy(request)

    def SetIamPolicy(self, request, context):
        return self.broker.set_iam_policy(request)

    def TestIamPermissions(self, request, context):
        held = self.broker.test_iam_permissions(request)
        return iam.TestIamPermissionsResponse(permissions=held)


_PUBLISHER = {
    "CreateTopic": (w.Topic, False),
    "GetTopic": (w.GetTopicRequest, False),
    "ListTopics": (w.ListTopicsRequest, False),
    "ListTopicSubscriptions": (w.ListTopicSubscriptionsRequest, False),
    "DeleteTopic": (w.DeleteTopicRequest, False),
    "Publish": (w.PublishRequest, False),
    "ListTopicSnapshots": (w.ListTopicSnapshotsRequest, False),
}
_SUBSCRIBER = {
    "CreateSubscription": (w.Subscription, False),
    "GetSubscription": (w.GetSubscriptionRequest, False),
    "UpdateSubscription": (w.UpdateSubscriptionRequest, False),
    "ListSubscriptions": (w.ListSubscriptionsRequest, False),
    "DeleteSubscription": (w.DeleteSubscriptionRequest, False),
    "Pull": (w.PullRequest, False),
    "Acknowledge": (w.AcknowledgeRequest, False),
    "ModifyAckDeadline": (w.ModifyAckDeadlineRequest, False),
    "Seek": (w.SeekRequest, False),
    "CreateSnapshot": (w.CreateSnapshotRequest, False),
    "GetSnapshot": (w.GetSnapshotRequest, False),
    "ListSnapshots": (w.ListSnapshotsRequest, False),
    "UpdateSnapshot": (w.UpdateSnapshotRequest, False),
    "DeleteSnapshot": (w.DeleteSnapshotRequest, False),
    "StreamingPull": (w.StreamingPullRequest, True),
}
_IAM_POLICY = {
    "GetIamPolicy": (iam.GetIamPolicyRequest, False),
    "SetIamPolicy": (iam.SetIamPolicyRequest, False),
    "TestIamPermissions": (iam.TestIamPermissionsRequest, False),
}


def _unary(fn):
    def handler(request, context):
        try:
            return fn(request, context)
        except ApiError as exc:
            context.abort(exc.code, exc.message)

    return handler


def _streaming(fn):
    def handler(request_iterator, context):
        try:
            yield from fn(request_iterator, context)
        except ApiError as exc:
            context.abort(exc.code, exc.message)

    return handler


def _handlers(service: PubSubService, table: dict) -> dict:
    out = {}
    for name, (request_type, streaming) in table.items():
        fn = getattr(service, name)
        if streaming:
            out[name] = grpc.stream_stream_rpc_method_handler(
                _streaming(fn), request_type.FromString, w.serialize
            )
        else:
            out[name] = grpc.unary_unary_rpc_method_handler(
                _unary(fn), request_type.FromString, w.serialize
            )
    return out


def build_server(
    broker: Broker, host: str, port: int, workers: int = 64
) -> tuple[grpc.Server, int]:
    """An unstarted gRPC server for broker, listening on host:port, and the port it bound."""
    service = PubSubService(broker)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pubsub-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", -1),
            # Never share a port with another server: a clash must fail loudly.
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "google.pubsub.v1.Publisher", _handlers(service, _PUBLISHER)
            ),
            grpc.method_handlers_generic_handler(
                "google.pubsub.v1.Subscriber", _handlers(service, _SUBSCRIBER)
            ),
            grpc.method_handlers_generic_handler(
                "google.iam.v1.IAMPolicy", _handlers(service, _IAM_POLICY)
            ),
        )
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound
