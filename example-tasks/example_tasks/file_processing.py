"""file_processing: read an uploaded object, write a processed copy and its metadata.

The input is streamed twice, a megabyte at a time: once to describe it (size, SHA-256,
whether it is UTF-8 text, its line, word and character counts), once to write the processed
copy. A task's memory stays a few megabytes whatever the size of its input.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, field_validator

from taskcore import TaskContext, TaskPayload, task
from taskcore.payloads import INPUT, check_object_name, parse_gs_uri

TEXT_TYPES = (
    "text/",
    "application/json",
    "application/csv",
    "application/xml",
    "application/x-ndjson",
)
# Enough to tell text from binary by a NUL byte, as the first read.
SNIFF_BYTES = 8192
# Processed text leaves in batches of about this size.
WRITE_BATCH_CHARS = 256 * 1024


class FileProcessingPayload(TaskPayload):
    """Process one uploaded object: write a processed copy and a metadata JSON."""

    filename: str = Field(
        "sample.txt",
        description="Object name under uploads/ in the bucket.",
        examples=["report.csv"],
    )
    source_uri: Annotated[str | None, INPUT] = Field(
        None, description="Explicit gs://<BUCKET_NAME>/<object> input; overrides filename."
    )
    processing_time: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Extra simulated seconds (the recipe's field); capped by the worker.",
    )

    @field_validator("filename")
    @classmethod
    def _safe_filename(cls, value: str) -> str:
        return check_object_name(value)

    @field_validator("source_uri")
    @classmethod
    def _safe_source_uri(cls, value: str | None) -> str | None:
        if value is not None:
            parse_gs_uri(value)
        return value

    def input_uris(self, bucket_name: str) -> list[str]:
        return [self.source_uri or f"gs://{bucket_name}/uploads/{self.filename}"]


@dataclass
class InputSummary:
    """What the first pass over an input found."""

    size: int
    sha256: str
    content_type: str
    is_text: bool
    line_count: int = 0
    word_count: int = 0
    char_count: int = 0


# str.splitlines() breaks lines at these (\r\n counts once).
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


class TextCounter:
    """Counts lines, words and characters of text fed in pieces, as whole-text str methods
    would: len(text.splitlines()), len(text.split()), len(text)."""

    def __init__(self) -> None:
        self.chars = self.words = self.breaks = 0
        self._in_word = False
        self._pending_cr = False  # a piece ended in \r: a \n next is the same break
        self._last_was_break = True  # nothing yet: no unterminated last line

    def feed(self, text: str) -> None:
        if not text:
            return
        self.chars += len(text)
        # A \r\n split across two pieces: the \r was counted already.
        text_for_breaks = text[1:] if self._pending_cr and text.startswith("\n") else text
        self.breaks += len(_LINE_BREAK.findall(text_for_breaks))
        self._pending_cr = text.endswith("\r")
        if text_for_breaks:
            self._last_was_break = bool(_LINE_BREAK.match(text_for_breaks[-1]))
        # Words: count each start of a run of non-whitespace, across piece boundaries.
        for match in re.finditer(r"\S+", text):
            if not (match.start() == 0 and self._in_word):
                self.words += 1
        self._in_word = not text[-1].isspace()

    @property
    def lines(self) -> int:
        return self.breaks + (0 if self._last_was_break else 1)


def input_uri(ctx: TaskContext, payload: FileProcessingPayload) -> str:
    """The object this task reads: source_uri, or uploads/<filename> in the bucket."""
    return payload.input_uris(ctx.settings.bucket_name)[0]


def describe_input(ctx: TaskContext, uri: str) -> InputSummary:
    """First pass: size, SHA-256, and (for UTF-8 text) its counts."""
    digest = hashlib.sha256()
    size = 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    counter = TextCounter()
    with ctx.open_input(uri) as stream:
        content_type = stream.content_type
        is_text = True
        first = True
        while chunk := stream.read(io.DEFAULT_BUFFER_SIZE * 128):
            digest.update(chunk)
            size += len(chunk)
            if first and not content_type.startswith(TEXT_TYPES) and b"\x00" in chunk[:SNIFF_BYTES]:
                is_text = False
            first = False
            if is_text:
                try:
                    counter.feed(decoder.decode(chunk))
                except UnicodeDecodeError:
                    is_text = False
        if is_text:
            try:
                counter.feed(decoder.decode(b"", final=True))
            except UnicodeDecodeError:
                is_text = False
    summary = InputSummary(size, digest.hexdigest(), content_type, is_text)
    if is_text:
        summary.line_count, summary.word_count = counter.lines, counter.words
        summary.char_count = counter.chars
    return summary


def normalized_lines(lines):
    """Canonical text, line by line: NFC, no trailing spaces, no trailing blank lines.

    Newlines are normalization boundaries, so NFC line by line equals NFC of the whole text.
    """
    blank = 0
    for line in lines:
        text = unicodedata.normalize("NFC", line.rstrip("\n")).rstrip()
        if not text:
            blank += 1  # held back: blank lines at the very end are dropped
            continue
        yield "\n" * blank + text + "\n"
        blank = 0


def write_processed_text(ctx: TaskContext, uri: str) -> str:
    """Second pass for text: processed.txt, LF line endings, one final newline."""
    with (
        ctx.open_input(uri) as stream,
        ctx.outputs.open("processed.txt", "text/plain; charset=utf-8") as out,
    ):
        text = io.TextIOWrapper(stream, encoding="utf-8", newline=None)
        batch: list[str] = []
        batched = 0
        for piece in normalized_lines(text):
            batch.append(piece)
            batched += len(piece)
            if batched >= WRITE_BATCH_CHARS:
                out.write("".join(batch).encode("utf-8"))
                batch, batched = [], 0
        if batch:
            out.write("".join(batch).encode("utf-8"))
    return out.uri


def write_processed_binary(ctx: TaskContext, uri: str) -> str:
    """Second pass for binary data: processed.gz (mtime 0: a pure function of the input)."""
    with (
        ctx.open_input(uri) as stream,
        ctx.outputs.open("processed.gz", "application/gzip") as out,
        gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0) as packed,
    ):
        while chunk := stream.read(io.DEFAULT_BUFFER_SIZE * 128):
            packed.write(chunk)
    return out.uri


@task("file_processing")
def process_file(ctx: TaskContext, payload: FileProcessingPayload) -> None:
    """Read an uploaded object; write a processed copy and its metadata.

    Writes processed.txt (normalised text) or processed.gz (binary) and metadata.json.
    """
    uri = input_uri(ctx, payload)
    summary = describe_input(ctx, uri)
    if payload.processing_time:
        # The recipe's simulated extra work, capped so a client cannot pin a worker.
        ctx.sleep(min(payload.processing_time, ctx.settings.max_processing_time_seconds))
    metadata = {
        "task_id": ctx.task_id,
        "source_uri": uri,
        "size": summary.size,
        "sha256": summary.sha256,
        "content_type": summary.content_type,
        "is_text": summary.is_text,
    }
    if summary.is_text:
        metadata.update(
            line_count=summary.line_count,
            word_count=summary.word_count,
            char_count=summary.char_count,
        )
        metadata["output_uri"] = write_processed_text(ctx, uri)
    else:
        metadata["output_uri"] = write_processed_binary(ctx, uri)
    ctx.outputs.write_json("metadata.json", metadata)
