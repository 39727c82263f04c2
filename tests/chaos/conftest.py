"""Fixtures for the fault-injection machinery: proxies in front of the real emulators.

Clients here talk to a proxy explicitly (a gRPC channel to its address, a storage client
whose endpoint is its URL) and never retry, so each fault shows as the error it causes.
Resources are created straight on the emulators, past the proxies.
"""

from __future__ import annotations

import grpc
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from chaos.proxy import FaultProxy
from tests.conftest import make_test_settings


@pytest.fixture
def pubsub_proxy(pubsub_emulator):
    """A FaultProxy in front of the Pub/Sub emulator, stopped after the test."""
    with FaultProxy(pubsub_emulator.env_value, name="pubsub") as proxy:
        yield proxy


@pytest.fixture
def gcs_proxy(gcs_emulator):
    """A FaultProxy in front of the GCS emulator, stopped after the test."""
    with FaultProxy(gcs_emulator.env_value, name="gcs") as proxy:
        yield proxy


@pytest.fixture
def pipeline_settings(pubsub_emulator, gcs_emulator):
    """Settings whose topic, subscriptions and bucket exist on the emulators."""
    from taskcore.bootstrap import bootstrap

    settings = make_test_settings()
    bootstrap(settings)
    return settings


class PubSubThroughProxy:
    """Raw publish and pull RPCs through a proxy, one attempt each (no retries)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.publisher = PublisherClient(transport=PublisherGrpcTransport(channel=self.channel))
        self.subscriber = SubscriberClient(transport=SubscriberGrpcTransport(channel=self.channel))

    def publish(self, topic: str, data: bytes, timeout: float = 5.0) -> str:
        response = self.publisher.publish(
            topic=topic, messages=[{"data": data}], retry=None, timeout=timeout
        )
        return response.message_ids[0]

    def pull(self, subscription: str, timeout: float = 5.0, max_messages: int = 10) -> list:
        response = self.subscriber.pull(
            request={"subscription": subscription, "max_messages": max_messages},
            retry=None,
            timeout=timeout,
        )
        if response.received_messages:
            self.subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                },
                retry=None,
                timeout=timeout,
            )
        return [m.message.data for m in response.received_messages]

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def pubsub_via_proxy(pubsub_proxy):
    client = PubSubThroughProxy(pubsub_proxy.address)
    yield client
    client.close()


def storage_via(url: str, project: str) -> storage.Client:
    """A storage client whose every request goes to url (the emulator or a proxy)."""
    return storage.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )


@pytest.fixture
def bucket_via_proxy(gcs_proxy, pipeline_settings):
    """The test bucket, reached through the GCS proxy."""
    client = storage_via(gcs_proxy.url, pipeline_settings.project_id)
    yield client.bucket(pipeline_settings.bucket_name)
    client.close()
