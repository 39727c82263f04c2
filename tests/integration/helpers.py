"""Helpers for integration tests: publish tasks, read outputs, pull dead letters."""

from __future__ import annotations

import time

from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client, subscriber_client
from taskcore.envelope import build_envelope
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import StatusStore, TaskStatus
from taskcore.tasks import load_task_modules
from tests.registries import builtin_registry


def publish_tasks(settings: Settings, specs: list[tuple[str, dict]]) -> list[str]:
    """Publish (task_type, fields) specs as envelopes; return their task ids."""
    registry = load_task_modules(settings.task_modules)
    publisher = Publisher(settings)
    try:
        ids = []
        for task_type, fields in specs:
            envelope, _ = build_envelope(registry, task_type, fields)
            publisher.publish_task(envelope)
            ids.append(envelope.task_id)
        return ids
    finally:
        publisher.close()


def publish_envelope_with(settings: Settings, attributes: dict[str, str]) -> str:
    """Publish a valid data_transformation task with extra attributes; its task id."""
    envelope, _ = build_envelope(builtin_registry(), "data_transformation", {"dataset_size": 3})
    data, base = envelope.to_message()
    publish_raw(settings, data, **{**base, **attributes})
    return envelope.task_id


def publish_raw(settings: Settings, data: bytes, **attributes: str) -> str:
    """Publish arbitrary bytes to the task topic (for poison-message tests)."""
    publisher = Publisher(settings)
    try:
        return publisher.publish(settings.topic_path, data, attributes)
    finally:
        publisher.close()


def upload(settings: Settings, name: str, data: bytes, content_type: str = "text/plain") -> str:
    """Put an input object under uploads/ and return its gs:// URI."""
    blob = make_bucket(settings, storage_client(settings)).blob(f"uploads/{name}")
    blob.upload_from_string(data, content_type=content_type)
    return f"gs://{settings.bucket_name}/uploads/{name}"


def outputs_of(settings: Settings, task_id: str) -> dict[str, bytes]:
    """The task's result: the outputs its succeeded record names, by name ({} if none)."""
    record = status_of(settings, task_id)
    if record is None or record.state != "succeeded":
        return {}
    bucket = make_bucket(settings, storage_client(settings))
    prefix = f"gs://{settings.bucket_name}/"
    return {
        ref.name: bucket.blob(ref.uri[len(prefix) :]).download_as_bytes(
            if_generation_match=ref.generation
        )
        for ref in record.outputs
    }


def output_objects(settings: Settings, task_id: str) -> dict[str, int]:
    """Every object under outputs/<task_id>/ (every run's), by name, with its generation."""
    bucket = make_bucket(settings, storage_client(settings))
    prefix = f"outputs/{task_id}/"
    return {blob.name[len(prefix) :]: blob.generation for blob in bucket.list_blobs(prefix=prefix)}


def status_of(settings: Settings, task_id: str) -> TaskStatus | None:
    """The task's status record, or None."""
    return StatusStore(make_bucket(settings, storage_client(settings))).get(task_id)


def pull_all(
    settings: Settings, subscription_path: str, *, wait: float = 2.0, ack: bool = True
) -> list:
    """Pull until the subscription stays empty for `wait` seconds; return the messages."""
    subscriber = subscriber_client(settings)
    messages = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < wait:
            response = subscriber.pull(
                request={"subscription": subscription_path, "max_messages": 500}, timeout=5
            )
            if response.received_messages:
                quiet_since = time.monotonic()
                messages.extend(response.received_messages)
                if ack:
                    subscriber.acknowledge(
                        request={
                            "subscription": subscription_path,
                            "ack_ids": [m.ack_id for m in response.received_messages],
                        }
                    )
            else:
                time.sleep(0.1)
    finally:
        subscriber.close()
    return messages


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings as the environment variables a worker subprocess reads."""
    return settings.as_environ()


def output_generations(settings: Settings, task_id: str) -> dict[str, int]:
    """Generation of each committed output of task_id: a rewrite would change it."""
    record = status_of(settings, task_id)
    if record is None:
        return {}
    return {ref.name: ref.generation for ref in record.outputs}
