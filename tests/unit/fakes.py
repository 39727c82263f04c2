"""In-memory stand-ins for a GCS bucket, for unit tests that must not touch the network."""

from __future__ import annotations

from google.api_core import exceptions as gexc


class FakeBlob:
    """The few Blob methods the worker uses, with GCS's create-only semantics."""

    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket = bucket
        self.name = name
        self.content_type = None

    def upload_from_string(self, data, content_type=None, if_generation_match=None, retry=None):
        if isinstance(data, str):
            data = data.encode()
        if if_generation_match == 0 and self.name in self.bucket.objects:
            raise gexc.PreconditionFailed("exists")
        self.bucket.objects[self.name] = (data, content_type)
        self.bucket.writes += 1

    def download_as_bytes(self, start=None, end=None, retry=None):
        if self.name not in self.bucket.objects:
            raise gexc.NotFound(self.name)
        data, self.content_type = self.bucket.objects[self.name]
        if end is not None:
            data = data[start or 0 : end + 1]
        return data


class FakeBucket:
    """A dict of name → (bytes, content type) that counts writes."""

    def __init__(self, name: str = "test-bucket") -> None:
        self.name = name
        self.objects: dict[str, tuple[bytes, str | None]] = {}
        self.writes = 0

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)
