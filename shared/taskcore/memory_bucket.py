"""An in-memory bucket with Cloud Storage's generation semantics, for tests and `run_task`.

It implements the part of google.cloud.storage's Bucket and Blob that the pipeline uses:
create-only and conditional writes (`if_generation_match`, 412 as PreconditionFailed),
generations that change on every write, ranged reads, streaming reads and writes (`open`),
listing by prefix, conditional deletes, and the properties GCS reports (size, crc32c,
content type). Thread-safe.
"""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from google.api_core import exceptions as gexc

from taskcore.outputs import crc32c_of

_generations = itertools.count(1_700_000_000_000_000)


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str | None
    generation: int
    metageneration: int = 1


class MemoryBucket:
    """A bucket held in a dict: name → StoredObject."""

    def __init__(self, name: str = "test-bucket") -> None:
        self.name = name
        self.objects: dict[str, StoredObject] = {}
        self.writes = 0
        self._lock = threading.Lock()

    def blob(self, name: str, generation: int | None = None) -> MemoryBlob:
        return MemoryBlob(self, name, generation)

    def get_blob(self, name: str, **_: object) -> MemoryBlob | None:
        blob = self.blob(name)
        return blob if blob.exists() else None

    def list_blobs(self, prefix: str | None = None, max_results: int | None = None, **_: object):
        with self._lock:
            names = sorted(n for n in self.objects if n.startswith(prefix or ""))
        blobs: Iterator[MemoryBlob] = (self._loaded(n) for n in names)
        return list(itertools.islice((b for b in blobs if b is not None), max_results))

    def _loaded(self, name: str) -> MemoryBlob | None:
        blob = self.blob(name)
        try:
            blob.reload()
        except gexc.NotFound:
            return None
        return blob

    # --- what blobs call ---------------------------------------------------------------------

    def _write(self, name: str, data: bytes, content_type, if_generation_match) -> StoredObject:
        with self._lock:
            current = self.objects.get(name)
            _check(name, current, if_generation_match)
            stored = StoredObject(bytes(data), content_type, next(_generations))
            self.objects[name] = stored
            self.writes += 1
            return stored

    def _read(self, name: str, if_generation_match=None, generation=None) -> StoredObject:
        with self._lock:
            current = self.objects.get(name)
        if current is None or (generation is not None and current.generation != generation):
            raise gexc.NotFound(f"No such object: {self.name}/{name}")
        _check(name, current, if_generation_match)
        return current

    def _delete(self, name: str, if_generation_match=None) -> None:
        with self._lock:
            current = self.objects.get(name)
            if current is None:
                raise gexc.NotFound(f"No such object: {self.name}/{name}")
            _check(name, current, if_generation_match)
            del self.objects[name]


def _check(name: str, current: StoredObject | None, if_generation_match) -> None:
    if if_generation_match is None:
        return
    held = (
        current is None
        if if_generation_match == 0
        else (current is not None and current.generation == int(if_generation_match))
    )
    if not held:
        raise gexc.PreconditionFailed(f"precondition failed for {name}")


class MemoryBlob:
    """One object name in a MemoryBucket, with the Blob methods the pipeline calls."""

    def __init__(self, bucket: MemoryBucket, name: str, generation: int | None = None) -> None:
        self.bucket = bucket
        self.name = name
        # A handle made with a generation reads that generation only.
        self._pinned_generation = generation
        self.generation = generation
        self.metageneration: int | None = None
        self.content_type: str | None = None
        self.size: int | None = None
        self.crc32c: str | None = None

    def _adopt(self, stored: StoredObject) -> None:
        self.generation = stored.generation
        self.metageneration = stored.metageneration
        self.content_type = stored.content_type
        self.size = len(stored.data)
        self.crc32c = crc32c_of(stored.data)

    def upload_from_string(
        self, data, content_type=None, if_generation_match=None, **_: object
    ) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._adopt(self.bucket._write(self.name, data, content_type, if_generation_match))

    def upload_from_file(
        self, file_obj, size=None, content_type=None, if_generation_match=None, **_: object
    ) -> None:
        data = file_obj.read() if size is None else file_obj.read(size)
        self.upload_from_string(data, content_type, if_generation_match)

    def download_as_bytes(self, start=None, end=None, if_generation_match=None, **_: object):
        stored = self.bucket._read(self.name, if_generation_match, self._pinned_generation)
        self._adopt(stored)
        data = stored.data
        if start is not None or end is not None:
            data = data[start or 0 : None if end is None else end + 1]
        return data

    def download_as_text(self, **kwargs) -> str:
        return self.download_as_bytes(**kwargs).decode("utf-8")

    def reload(self, **_: object) -> None:
        self._adopt(self.bucket._read(self.name))

    def exists(self, **_: object) -> bool:
        try:
            self.bucket._read(self.name)
        except gexc.NotFound:
            return False
        return True

    def delete(self, if_generation_match=None, **_: object) -> None:
        self.bucket._delete(self.name, if_generation_match)

    def open(self, mode: str = "rb", content_type=None, if_generation_match=None, **_: object):
        """A file object: "rb" reads the object, "wb" writes it when closed."""
        if mode in ("rb", "r"):
            data = self.download_as_bytes()
            return io.BytesIO(data) if mode == "rb" else io.StringIO(data.decode("utf-8"))
        if mode == "wb":
            return _Writer(self, content_type, if_generation_match)
        raise ValueError(f"mode {mode!r} is not supported")


class _Writer(io.BytesIO):
    """Buffers what is written; the object appears (conditionally) on close."""

    def __init__(self, blob: MemoryBlob, content_type, if_generation_match) -> None:
        super().__init__()
        self._blob = blob
        self._content_type = content_type
        self._if_generation_match = if_generation_match

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            self._blob.upload_from_string(data, self._content_type, self._if_generation_match)

    def terminate(self) -> None:
        """Drop what was written: the object never appears."""
        super().close()
