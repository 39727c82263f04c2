"""Publishing tasks to the topic, with a bounded wait for Pub/Sub's confirmation."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from taskcore.clients import publisher_client
from taskcore.envelope import MAX_MESSAGE_BYTES, TaskEnvelope, build_envelope
from taskcore.errors import InvalidTaskError, PublishError, PublishOutcomeUnknown
from taskcore.settings import Settings

if TYPE_CHECKING:
    from taskcore.tasks import TaskRegistry

log = logging.getLogger(__name__)

# Pub/Sub's attribute limits: keys ≤ 256 bytes, values ≤ 1024 bytes, ≤ 100 attributes.
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024


def check_attributes(attributes: Mapping[str, str]) -> None:
    """Raise InvalidTaskError when attributes break Pub/Sub's limits."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidTaskError(
            f"more than {MAX_ATTRIBUTES} attributes", error_type="attribute_limit"
        )
    for key, value in attributes.items():
        if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES or key.startswith("goog"):
            raise InvalidTaskError(
                f"attribute key {key[:40]!r} is not allowed", error_type="attribute_limit"
            )
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise InvalidTaskError(
                f"attribute {key!r} is over {MAX_ATTRIBUTE_VALUE_BYTES} bytes",
                error_type="attribute_limit",
            )


def truncate_utf8(text: str, max_bytes: int = MAX_ATTRIBUTE_VALUE_BYTES) -> str:
    """Cut text to at most max_bytes of UTF-8 without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode("utf-8", errors="ignore") + "..."


# Pub/Sub said no before taking anything: the message is certainly not published.
_DEFINITE = (
    gexc.NotFound,
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.InvalidArgument,
    gexc.FailedPrecondition,
)
# A connection that was never made sent nothing either.
_NEVER_CONNECTED = ("failed to connect", "connection refused", "name resolution")


def publish_failure(topic_path: str, exc: BaseException) -> PublishError:
    """The PublishError exc stands for: PublishOutcomeUnknown unless Pub/Sub surely has nothing.

    A publish that timed out, or whose call broke off after it was sent, may have landed all
    the same (and its retry may land a second copy): only a refusal, or a connection never
    made, says for certain that nothing was published.
    """
    text = f"publish to {topic_path} failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, _DEFINITE):
        return PublishError(text)
    cause = exc
    while isinstance(cause, gexc.RetryError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, _DEFINITE) or any(s in str(cause).lower() for s in _NEVER_CONNECTED):
        return PublishError(text)
    return PublishOutcomeUnknown(text)


class Publisher:
    """Publishes raw messages and task envelopes, waiting at most the publish timeout."""

    def __init__(self, settings: Settings, client: pubsub_v1.PublisherClient | None = None) -> None:
        self.settings = settings
        self.client = client or publisher_client(settings)

    def publish(self, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish one message and return its id once Pub/Sub has confirmed it."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise InvalidTaskError(
                f"message is {len(data)} bytes; Pub/Sub's limit is {MAX_MESSAGE_BYTES}",
                error_type="message_too_large",
            )
        check_attributes(attributes)
        try:
            future = self.client.publish(topic_path, data, **dict(attributes))
            return future.result(timeout=self.settings.publish_timeout_seconds)
        except InvalidTaskError:
            raise
        except Exception as exc:  # the batching thread surfaces transport errors as others
            raise publish_failure(topic_path, exc) from exc

    def publish_task(
        self, envelope: TaskEnvelope, extra_attributes: Mapping[str, str] | None = None
    ) -> str:
        """Publish a task to the task topic; returns the Pub/Sub message id."""
        data, attributes = envelope.to_message()
        if extra_attributes:
            attributes.update(extra_attributes)
        return self.publish(self.settings.topic_path_for(envelope.queue), data, attributes)

    def publish_tasks(self, envelopes: Sequence[TaskEnvelope]) -> list[str | Exception]:
        """Publish tasks concurrently; each result is a message id or the error that stopped it.

        Every message goes to the client's batcher before any is waited for, so a batch of
        tasks costs about one round trip, and all of them share one publish timeout.
        """
        started: list[Future | Exception] = []
        for envelope in envelopes:
            data, attributes = envelope.to_message()
            try:
                if len(data) > MAX_MESSAGE_BYTES:
                    raise InvalidTaskError(
                        f"message is {len(data)} bytes; Pub/Sub's limit is {MAX_MESSAGE_BYTES}",
                        error_type="message_too_large",
                    )
                check_attributes(attributes)
                topic = self.settings.topic_path_for(envelope.queue)
                started.append(self.client.publish(topic, data, **attributes))
            except InvalidTaskError as exc:
                started.append(exc)
            except Exception as exc:
                started.append(PublishError(f"publish failed: {type(exc).__name__}: {exc}"))
        deadline = time.monotonic() + self.settings.publish_timeout_seconds
        results: list[str | Exception] = []
        for item in started:
            if isinstance(item, Exception):
                results.append(item)
                continue
            try:
                results.append(item.result(timeout=max(0.0, deadline - time.monotonic())))
            except Exception as exc:
                results.append(publish_failure(self.settings.topic_path, exc))  # any queue's
        return results

    def check_topic(self, timeout: float) -> None:
        """Raise PublishError unless the task topic answers a get within timeout seconds."""
        try:
            self.client.get_topic(
                request={"topic": self.settings.topic_path}, timeout=timeout, retry=None
            )
        except Exception as exc:
            raise PublishError(
                f"topic {self.settings.topic_path} is not reachable: {type(exc).__name__}"
            ) from exc

    def close(self) -> None:
        """Flush pending batches and stop the client's threads."""
        try:
            self.client.stop()
        except Exception:  # stop() raises if called twice; closing is best effort
            log.debug("publisher stop failed", exc_info=True)


def publish_new_task(
    settings: Settings, registry: TaskRegistry, task_type: str, fields: Mapping[str, Any]
) -> TaskEnvelope:
    """Validate fields as a new task of task_type, publish it, and return its envelope.

    For one-off publishes from tools, benchmarks and tests: it opens and closes a publisher
    of its own.
    """
    envelope, _ = build_envelope(registry, task_type, dict(fields))
    publisher = Publisher(settings)
    try:
        publisher.publish_task(envelope)
    finally:
        publisher.close()
    return envelope
