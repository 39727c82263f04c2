"""Fixtures for the Pub/Sub emulator conformance suite: every test runs on both emulators.

The `emulator` fixture is session-scoped and parametrized over Google's emulator and ours,
so each is started once and always stopped. Tests get a `ps` helper with fresh names in a
project of their own, so they never see each other's topics.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1 import types

from devstack.emulators import start_pubsub_emulator
from devstack.emulators.google_pubsub import find_google_pubsub_emulator
from devstack.emulators.process import temporary_env

KINDS = ("google", "python")


@pytest.fixture(scope="session", params=KINDS)
def emulator(request, tmp_path_factory):
    """A running emulator of each kind (Google's skipped when it is not installed)."""
    kind = request.param
    if kind == "google" and find_google_pubsub_emulator() is None:
        pytest.skip(
            "Google's Pub/Sub emulator (gcloud pubsub-emulator component and Java) is not installed"
        )
    log_path = tmp_path_factory.mktemp(f"pubsub-{kind}") / "emulator.log"
    handle = start_pubsub_emulator(choice=kind, log_path=str(log_path))
    try:
        yield handle
    finally:
        handle.stop()


def emulator_env(value: str):
    """PUBSUB_EMULATOR_HOST=value while clients are created."""
    return temporary_env("PUBSUB_EMULATOR_HOST", value)


def make_clients(host: str) -> tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]:
    """An unmodified publisher and subscriber client pointed at host through PUBSUB_EMULATOR_HOST."""
    with emulator_env(host):
        return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


@pytest.fixture(scope="session")
def client_factory():
    """make_clients, for tests that start emulators of their own."""
    return make_clients


@pytest.fixture(scope="session")
def clients(emulator):
    """An unmodified publisher and subscriber client pointed at the emulator."""
    publisher, subscriber = make_clients(emulator.env_value)
    yield publisher, subscriber
    publisher.stop()
    subscriber.close()


@dataclass
class PubSub:
    """Clients plus helpers for one test, in a project of its own."""

    kind: str
    pub: pubsub_v1.PublisherClient
    sub: pubsub_v1.SubscriberClient
    project: str
    _streams: list = field(default_factory=list)

    def topic_path(self, name: str) -> str:
        """Full name of a topic in this test's project."""
        return f"{self.project}/topics/{name}"

    def sub_path(self, name: str) -> str:
        """Full name of a subscription in this test's project."""
        return f"{self.project}/subscriptions/{name}"

    def topic(self, name: str = "topic-main") -> str:
        """Create a topic; its full name."""
        return self.pub.create_topic(name=self.topic_path(name)).name

    def subscription(self, name: str, topic: str, **settings) -> str:
        """Create a subscription with settings; its full name."""
        request = dict(name=self.sub_path(name), topic=topic, **settings)
        return self.sub.create_subscription(request=request).name

    def publish(self, topic: str, *messages: types.PubsubMessage | bytes) -> list[str]:
        """Publish with one Publish call; the message ids."""
        msgs = [
            m if isinstance(m, types.PubsubMessage) else types.PubsubMessage(data=m)
            for m in messages
        ]
        return list(self.pub.api.publish(topic=topic, messages=msgs).message_ids)

    def pull_now(self, subscription: str, max_messages: int = 100) -> list:
        """What a non-blocking Pull returns right now."""
        request = dict(
            subscription=subscription, max_messages=max_messages, return_immediately=True
        )
        return list(self.sub.pull(request=request).received_messages)

    def wait_for(self, subscription: str, count: int = 1, timeout: float = 10.0) -> list:
        """Poll until count messages were pulled or timeout passes; all pulled."""
        got: list = []
        end = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < end:
            got += self.pull_now(subscription, count - len(got))
            if len(got) < count:
                time.sleep(0.02)
        return got

    def ack(self, subscription: str, received) -> None:
        """Acknowledge received messages."""
        self.sub.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in received])

    def nack(self, subscription: str, received) -> None:
        """Give received messages back (ack deadline 0)."""
        ack_ids = [m.ack_id for m in received]
        self.sub.modify_ack_deadline(
            subscription=subscription, ack_ids=ack_ids, ack_deadline_seconds=0
        )

    def stream(self, subscription: str, deadline: int = 10, **first) -> RawStream:
        """Open a raw StreamingPull; closed at the end of the test."""
        stream = RawStream(self.sub, subscription, deadline, **first)
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Close streams the test left open."""
        for stream in self._streams:
            stream.close()


class RawStream:
    """A bidirectional StreamingPull driven by hand: send requests, read messages."""

    def __init__(self, subscriber, subscription: str, deadline: int, **first) -> None:
        self._requests: queue.Queue = queue.Queue()
        self.received: queue.Queue = queue.Queue()
        self.error: Exception | None = None
        self.ended = threading.Event()
        self.send(subscription=subscription, stream_ack_deadline_seconds=deadline, **first)
        self._call = subscriber.api.streaming_pull(requests=self._iter_requests(), timeout=120)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _iter_requests(self):
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _read(self) -> None:
        try:
            for response in self._call:
                for message in response.received_messages:
                    self.received.put(message)
        except exceptions.GoogleAPICallError as exc:
            self.error = exc
        except Exception as exc:  # cancelled by close()
            self.error = exc
        self.ended.set()

    def send(self, **fields) -> None:
        """Send one StreamingPullRequest."""
        self._requests.put(types.StreamingPullRequest(**fields))

    def take(self, count: int, timeout: float = 10.0) -> list:
        """Up to count messages, waiting at most timeout in all."""
        out = []
        end = time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(self.received.get(timeout=max(0.01, end - time.monotonic())))
            except queue.Empty:
                break
        return out

    def wait_error(self, timeout: float = 10.0) -> Exception | None:
        """The error that ended the stream, once it ended."""
        self.ended.wait(timeout)
        return self.error

    def close(self) -> None:
        """Half-close and cancel the call."""
        self._requests.put(None)
        with contextlib.suppress(Exception):
            self._call.cancel()


@pytest.fixture
def ps(emulator, clients):
    """Helpers bound to the emulator, in a fresh project."""
    publisher, subscriber = clients
    helper = PubSub(emulator.kind, publisher, subscriber, f"projects/conf-{uuid.uuid4().hex[:10]}")
    try:
        yield helper
    finally:
        helper.close()
