"""Client factories for Pub/Sub and Cloud Storage.

The Google clients honour PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST themselves,
so nothing here (or anywhere in business code) branches on emulators. Clients are
created when asked for, never at import time; callers keep and reuse them.
"""

from __future__ import annotations

import os

import grpc
import requests
from google.api_core import retry as api_retry
from google.cloud import pubsub_v1, storage
from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions
from google.cloud.storage import retry as storage_retries
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from taskcore.settings import Settings

# Publishing retries briefly and then gives up, so callers can answer 503 in bounded time.
PUBLISH_RETRY_INITIAL = 0.1
PUBLISH_RETRY_MAX = 1.0


def publisher_client(
    settings: Settings, *, max_latency: float = 0.005
) -> pubsub_v1.PublisherClient:
    """A publisher that batches briefly and retries within the publish timeout."""
    retry = api_retry.Retry(
        initial=PUBLISH_RETRY_INITIAL,
        maximum=PUBLISH_RETRY_MAX,
        multiplier=2.0,
        timeout=settings.publish_timeout_seconds,
    )
    return pubsub_v1.PublisherClient(
        batch_settings=BatchSettings(
            max_messages=100, max_bytes=1_000_000, max_latency=max_latency
        ),
        publisher_options=PublisherOptions(retry=retry, timeout=settings.publish_timeout_seconds),
    )


# What the generated transport sets on production channels. Under PUBSUB_EMULATOR_HOST the
# client opens a bare insecure channel instead, whose 4 MB receive cap makes a pull of any
# larger message fail (and would let one big message stall the worker): we open it ourselves.
_GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def subscriber_client(settings: Settings) -> pubsub_v1.SubscriberClient:
    """A subscriber client for synchronous pull, acks and admin calls."""
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not emulator:
        return pubsub_v1.SubscriberClient()
    channel = grpc.insecure_channel(emulator, options=_GRPC_OPTIONS)
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def storage_client(settings: Settings, *, pool_size: int = 64) -> storage.Client:
    """A Cloud Storage client whose connection pool fits the worker's thread count."""
    client = storage.Client(project=settings.project_id)
    # requests keeps 10 connections per host by default; more threads than that would
    # queue on the pool and open throw-away connections.
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


def storage_retry(settings: Settings):
    """GCS retry for the worker: rides out an outage of up to INFRA_RETRY_SECONDS.

    Every write the pipeline makes is create-only or a whole-object overwrite with the
    same content, so retrying it is safe.
    """
    return storage_retries.DEFAULT_RETRY.with_delay(initial=0.25, maximum=4.0).with_timeout(
        settings.infra_retry_seconds
    )


def bucket(settings: Settings, client: storage.Client | None = None) -> storage.Bucket:
    """The pipeline's bucket (no request is made)."""
    return (client or storage_client(settings)).bucket(settings.bucket_name)
