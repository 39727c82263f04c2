"""Task outputs in Cloud Storage: every run writes its own set, and success commits one set.

A run writes create-only objects under outputs/<task_id>/<run_id>/. Two runs of one task
(a redelivery racing the original, a retry after a crash that left half a set behind) never
write the same object, so neither can mix its outputs into the other's. The `succeeded`
status record, written after the outputs, names the objects of exactly one run, with their
generations: that set is the task's result. Sets of runs that did not commit are deleted by
the run that did.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Callable
from typing import Any

import google_crc32c
from google.api_core import exceptions as gexc
from google.cloud import storage

from taskcore.errors import OutputConflictError
from taskcore.payloads import check_object_name
from taskcore.status import OutputRef

OUTPUT_PREFIX = "outputs"
# Streamed outputs go up in chunks of this size (a multiple of 256 KiB, as GCS requires): it
# is all of an output a run ever holds in memory.
STREAM_CHUNK_BYTES = 1024 * 1024


def task_output_prefix(task_id: str) -> str:
    """The object prefix that holds every run's outputs of task_id."""
    return f"{OUTPUT_PREFIX}/{task_id}/"


def run_output_prefix(task_id: str, run_id: str) -> str:
    """The object prefix one run writes its outputs under."""
    return f"{task_output_prefix(task_id)}{run_id}/"


def crc32c_of(data: bytes) -> str:
    """The base64 CRC32C GCS reports for data."""
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


class OutputWriter:
    """Writes one run's outputs create-only and remembers them for the status record."""

    def __init__(
        self,
        bucket: storage.Bucket,
        task_id: str,
        run_id: str,
        check_alive: Callable[[], None],
        retry=None,
    ) -> None:
        self.bucket = bucket
        self.retry = retry
        self.task_id = task_id
        self.run_id = run_id
        self.prefix = run_output_prefix(task_id, run_id)
        # Called before every write: a run past its time limit, cancelled or superseded
        # raises here instead of writing.
        self._check_alive = check_alive
        self.written: list[OutputRef] = []

    def uri(self, name: str) -> str:
        """The gs:// URI of this run's output called name."""
        return f"gs://{self.bucket.name}/{self.prefix}{name}"

    def write(self, name: str, data: bytes | str, content_type: str) -> str:
        """Write one output (create-only) and return its URI."""
        self._check_alive()
        _check_name(name, self.written)
        if isinstance(data, str):
            data = data.encode("utf-8")
        blob = self.bucket.blob(self.prefix + name)
        checksum = crc32c_of(data)
        try:
            blob.upload_from_string(
                data, content_type=content_type, if_generation_match=0, retry=self.retry
            )
        except gexc.PreconditionFailed:
            # Only this run writes here, so the object is this very write, landed on a try
            # whose answer was lost; anything else means the run wrote the name twice.
            blob.reload(retry=self.retry)
            if blob.crc32c != checksum:
                raise OutputConflictError(
                    f"output {name!r} already exists with other content in this run"
                ) from None
        return self._remember(name, blob, len(data), content_type, checksum)

    def open(self, name: str, content_type: str) -> OutputStream:
        """A binary file object that streams one output up as it is written (create-only).

        The output exists once the stream is closed (use `with`); an exception inside the
        `with` block abandons the upload and leaves nothing behind.
        """
        self._check_alive()
        _check_name(name, self.written)
        return OutputStream(self, name, content_type)

    def write_json(self, name: str, value: Any) -> str:
        """Write a JSON output; NaN and infinities are refused, so the output is valid JSON."""
        text = json.dumps(value, indent=2, sort_keys=True, default=str, allow_nan=False)
        return self.write(name, text, "application/json")

    def _remember(self, name, blob, size, content_type, checksum) -> str:
        uri = self.uri(name)
        generation = int(blob.generation) if blob.generation is not None else None
        self.written.append(
            OutputRef(
                name=name,
                uri=uri,
                size=size,
                content_type=content_type,
                generation=generation,
                crc32c=checksum,
            )
        )
        return uri


def _check_name(name: str, written: list[OutputRef]) -> None:
    try:
        check_object_name(name)
    except ValueError as exc:
        raise OutputConflictError(f"output name {name!r} {exc}") from None
    if any(ref.name == name for ref in written):
        raise OutputConflictError(f"output {name!r} was already written by this run")


def discard_other_runs(
    bucket: storage.Bucket, task_id: str, keep_run_id: str, retry=None
) -> list[str]:
    """Delete the outputs of every run of task_id but keep_run_id; returns what was deleted."""
    deleted = []
    keep = run_output_prefix(task_id, keep_run_id)
    for blob in bucket.list_blobs(prefix=task_output_prefix(task_id), retry=retry):
        if blob.name.startswith(keep):
            continue
        try:
            blob.delete(if_generation_match=blob.generation, retry=retry)
        except (gexc.NotFound, gexc.PreconditionFailed):
            continue
        deleted.append(blob.name)
    return deleted


def discard_run(bucket: storage.Bucket, task_id: str, run_id: str, retry=None) -> int:
    """Delete one run's outputs (a run that lost the race to commit); returns how many."""
    count = 0
    for blob in bucket.list_blobs(prefix=run_output_prefix(task_id, run_id), retry=retry):
        try:
            blob.delete(if_generation_match=blob.generation, retry=retry)
        except (gexc.NotFound, gexc.PreconditionFailed):
            continue
        count += 1
    return count


class OutputStream(io.RawIOBase):
    """A streamed output: chunks go to a resumable upload; checksummed; recorded on close."""

    def __init__(self, writer: OutputWriter, name: str, content_type: str) -> None:
        super().__init__()
        self._writer = writer
        self._name = name
        self._content_type = content_type
        self._blob = writer.bucket.blob(writer.prefix + name)
        self._upload = self._blob.open(
            "wb",
            chunk_size=STREAM_CHUNK_BYTES,
            content_type=content_type,
            if_generation_match=0,
            ignore_flush=True,
            retry=writer.retry,
        )
        self._checksum = google_crc32c.Checksum()
        self._size = 0
        self.uri: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        # A run past its limit, cancelled or superseded stops here, mid-output.
        self._writer._check_alive()
        data = bytes(data)
        self._upload.write(data)
        self._checksum.update(data)
        self._size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to do: chunks leave as they fill (GCS cannot flush an open upload)."""

    def close(self) -> None:
        if self.closed:
            return
        try:
            try:
                self._upload.close()
            except Exception as exc:
                if getattr(getattr(exc, "response", None), "status_code", None) == 412:
                    raise OutputConflictError(
                        f"output {self._name!r} already exists in this run"
                    ) from None
                raise
            self._blob.reload(retry=self._writer.retry)
            checksum = base64.b64encode(self._checksum.digest()).decode("ascii")
            if self._blob.crc32c != checksum:
                raise OutputConflictError(f"output {self._name!r} does not hold what was written")
            self.uri = self._writer._remember(
                self._name, self._blob, self._size, self._content_type, checksum
            )
        finally:
            super().close()

    def abandon(self) -> None:
        """Stop without creating the output (the upload is cancelled)."""
        if not self.closed:
            # Best effort: an unfinished upload session expires by itself.
            with contextlib.suppress(Exception):
                self._upload.terminate()
            super().close()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()
        else:
            self.close()
