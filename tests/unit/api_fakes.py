"""In-memory stand-ins for the API's Pub/Sub publisher and Cloud Storage client.

They keep GCS's generation semantics (if_generation_match, 412 on a mismatch), which the
idempotency records and create-only status records rely on.
"""

from __future__ import annotations

import json
import threading

from google.api_core import exceptions as gexc

from taskcore.errors import PublishError


class FakePublisher:
    """Records what is published; `fail` (indices or all) makes publishes raise PublishError."""

    def __init__(self, *, fail_all: bool = False, fail_task_types=(), topic_error=None) -> None:
        self.fail_all = fail_all
        self.fail_task_types = set(fail_task_types)
        self.topic_error = topic_error
        self.envelopes = []
        self.topic_checks = 0
        self._lock = threading.Lock()

    def _one(self, envelope) -> str:
        if self.fail_all or envelope.task_type in self.fail_task_types:
            raise PublishError("fake Pub/Sub is down")
        with self._lock:
            self.envelopes.append(envelope)
            return f"msg-{len(self.envelopes)}"

    def publish_task(self, envelope) -> str:
        return self._one(envelope)

    def publish(self, topic: str, data: bytes, attributes) -> str:
        """A raw message (the dispatcher publishes delayed tasks as they were kept)."""
        from taskcore.envelope import TaskEnvelope

        return self._one(TaskEnvelope.model_validate_json(data))

    def publish_tasks(self, envelopes):
        results = []
        for envelope in envelopes:
            try:
                results.append(self._one(envelope))
            except PublishError as exc:
                results.append(exc)
        return results

    def check_topic(self, timeout: float) -> None:
        self.topic_checks += 1
        if self.topic_error is not None:
            raise self.topic_error


class FakeBlob:
    """The Blob methods the API uses, against FakeBucket's dict."""

    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket, self.name = bucket, name
        self.generation = None
        self.metadata = None
        self.size = None
        self.content_type = None

    def _check(self, if_generation_match) -> None:
        current = self.bucket.objects.get(self.name)
        if if_generation_match is None:
            return
        if (current[2] if current else 0) != if_generation_match:
            raise gexc.PreconditionFailed(f"{self.name}: generation mismatch")

    def upload_from_string(self, data, content_type=None, if_generation_match=None, **_) -> None:
        self._store(
            data.encode() if isinstance(data, str) else data, content_type, if_generation_match
        )

    def upload_from_file(self, stream, size=None, content_type=None, if_generation_match=None):
        self._store(stream.read(size), content_type, if_generation_match)

    def _store(self, data: bytes, content_type, if_generation_match) -> None:
        if self.bucket.error is not None:
            raise self.bucket.error
        with self.bucket.lock:
            self._check(if_generation_match)
            self.bucket.generation += 1
            self.bucket.objects[self.name] = (data, content_type, self.bucket.generation)
            self.bucket.metadata[self.name] = dict(self.metadata or {})
            self.generation = self.bucket.generation

    def _existing(self, if_generation_match) -> tuple[bytes, str | None, int]:
        # Call with the bucket's lock held.
        if self.bucket.error is not None:
            raise self.bucket.error
        if self.name not in self.bucket.objects:
            raise gexc.NotFound(self.name)
        self._check(if_generation_match)
        return self.bucket.objects[self.name]

    def download_as_bytes(self, if_generation_match=None, **_) -> bytes:
        with self.bucket.lock:
            data, _, self.generation = self._existing(if_generation_match)
            return data

    def reload(self, **_) -> None:
        if self.bucket.error is not None:
            raise self.bucket.error
        if self.name not in self.bucket.objects:
            raise gexc.NotFound(self.name)
        data, self.content_type, self.generation = self.bucket.objects[self.name]
        self.size = len(data)
        self.metadata = dict(self.bucket.metadata.get(self.name) or {}) or None

    def delete(self, if_generation_match=None, **_) -> None:
        with self.bucket.lock:
            self._existing(if_generation_match)
            del self.bucket.objects[self.name]


class FakeBucket:
    """name -> (data, content type, generation); `error` makes every call raise it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, tuple[bytes, str | None, int]] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.generation = 0
        self.error: Exception | None = None
        self.lock = threading.Lock()

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)

    def list_blobs(self, prefix: str = "", max_results: int | None = None, **_):
        if self.error is not None:
            raise self.error
        with self.lock:
            names = sorted(n for n in self.objects if n.startswith(prefix or ""))
        return [FakeBlob(self, n) for n in names[:max_results]]

    def json_of(self, name: str):
        return json.loads(self.objects[name][0])


class FakeStorage:
    """A storage.Client stand-in with one bucket per name."""

    def __init__(self) -> None:
        self.buckets: dict[str, FakeBucket] = {}

    def bucket(self, name: str) -> FakeBucket:
        return self.buckets.setdefault(name, FakeBucket(name))


SAMPLE_INPUT = "uploads/sample.txt"


def with_sample_input(storage: FakeStorage) -> FakeStorage:
    """The recipe's default input (file tasks default to filename sample.txt), uploaded."""
    bucket_of(storage).blob(SAMPLE_INPUT).upload_from_string(b"sample\n", "text/plain")
    return storage


def bucket_of(storage: FakeStorage) -> FakeBucket:
    """The unit tests' bucket on a fake storage client."""
    return storage.bucket("unit-bucket")
