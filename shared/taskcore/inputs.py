"""Task inputs: which objects a task may read, and reading them as streams.

A task reads only objects of the pipeline's bucket under INPUT_PREFIXES (uploads/ by
default): never another task's status record or outputs, never another bucket. The API
checks this when a task is submitted (400) and the worker again when the task reads.

The API also pins each input to the generation that existed at submission (the envelope's
`inputs`), so the worker reads exactly what was submitted: an input replaced or deleted
since is a permanent `missing_input`, never silently a different file.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from google.api_core import exceptions as gexc
from google.cloud import storage

from taskcore.errors import InputNotAllowedError, InputTooLargeError, MissingInputError
from taskcore.payloads import parse_gs_uri
from taskcore.settings import Settings

# Inputs are read in chunks of this size: all of an input a reader holds in memory at once.
READ_CHUNK_BYTES = 1024 * 1024


def check_input_uri(uri: str, settings: Settings) -> str:
    """The object name of an input URI a task may read; InputNotAllowedError otherwise."""
    try:
        bucket_name, name = parse_gs_uri(uri)
    except ValueError as exc:
        raise InputNotAllowedError(f"input {uri!r} {exc}") from None
    if bucket_name != settings.bucket_name:
        raise InputNotAllowedError(
            f"input {uri} is outside the pipeline bucket gs://{settings.bucket_name}"
        )
    if not name.startswith(settings.input_prefixes):
        allowed = ", ".join(f"gs://{settings.bucket_name}/{p}" for p in settings.input_prefixes)
        raise InputNotAllowedError(f"input {uri} is not under {allowed}")
    return name


class InputStream(io.BufferedIOBase):
    """An input object being read in chunks, with what is known about it."""

    def __init__(self, reader, *, uri: str, size: int, content_type: str, generation, on_read):
        super().__init__()
        self._reader = reader
        self.uri = uri
        self.size = size
        self.content_type = content_type
        self.generation = generation
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._on_read is not None:
            self._on_read()  # a run past its limit or stopped raises here, mid-input
        return self._reader.read(READ_CHUNK_BYTES if size is None or size < 0 else size)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(READ_CHUNK_BYTES):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def open_input(
    bucket: storage.Bucket,
    uri: str,
    settings: Settings,
    *,
    generation: int | None = None,
    retry=None,
    on_read: Callable[[], None] | None = None,
) -> InputStream:
    """Open an input for streaming: checked, sized, and pinned to `generation` when given."""
    name = check_input_uri(uri, settings)
    blob = bucket.blob(name, generation=generation)
    try:
        blob.reload(retry=retry)
    except gexc.NotFound:
        if generation is not None:
            raise MissingInputError(
                f"input {uri} was replaced or deleted after the task was submitted "
                f"(generation {generation} is gone)"
            ) from None
        raise MissingInputError(f"input {uri} does not exist") from None
    size = int(blob.size or 0)
    if size > settings.max_input_bytes:
        raise InputTooLargeError(
            f"input {uri} is {size} bytes; inputs are limited to {settings.max_input_bytes} "
            "(MAX_INPUT_BYTES)"
        )
    reader = bucket.blob(name, generation=blob.generation).open(
        "rb", chunk_size=READ_CHUNK_BYTES, retry=retry
    )
    return InputStream(
        reader,
        uri=uri,
        size=size,
        content_type=blob.content_type or "application/octet-stream",
        generation=blob.generation,
        on_read=on_read,
    )
