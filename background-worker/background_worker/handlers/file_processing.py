"""file_processing: read an uploaded object, write a processed copy and its metadata."""

from __future__ import annotations

import gzip
import hashlib
import unicodedata

from background_worker.context import TaskContext
from taskcore.task_types import FileProcessingPayload

TEXT_TYPES = (
    "text/",
    "application/json",
    "application/csv",
    "application/xml",
    "application/x-ndjson",
)


def input_uri(ctx: TaskContext, payload: FileProcessingPayload) -> str:
    """The object this task reads: source_uri, or uploads/<filename> in the bucket."""
    return payload.source_uri or f"gs://{ctx.settings.bucket_name}/uploads/{payload.filename}"


def decode_text(data: bytes, content_type: str) -> str | None:
    """The data as text if it is (declared or sniffed as) UTF-8 text, else None."""
    declared_text = content_type.startswith(TEXT_TYPES)
    if not declared_text and b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def normalize_text(text: str) -> str:
    """Canonical text: NFC, LF line endings, no trailing spaces, one final newline."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + ("\n" if lines else "")


def process_file(ctx: TaskContext, payload: FileProcessingPayload) -> None:
    """Write outputs/<task_id>/processed.{txt,gz} and metadata.json for one input object."""
    uri = input_uri(ctx, payload)
    data, content_type = ctx.read_input(uri)
    if payload.processing_time:
        # The recipe's simulated extra work, capped so a client cannot pin a worker.
        ctx.sleep(min(payload.processing_time, ctx.settings.max_processing_time_seconds))
    text = decode_text(data, content_type)
    metadata = {
        "task_id": ctx.task_id,
        "source_uri": uri,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": content_type,
        "is_text": text is not None,
    }
    if text is not None:
        processed = normalize_text(text)
        metadata.update(
            line_count=len(text.splitlines()),
            word_count=len(text.split()),
            char_count=len(text),
        )
        output = ctx.outputs.write("processed.txt", processed, "text/plain; charset=utf-8")
    else:
        # mtime=0 keeps the gzip bytes a pure function of the input.
        output = ctx.outputs.write("processed.gz", gzip.compress(data, mtime=0), "application/gzip")
    metadata["output_uri"] = output
    ctx.outputs.write_json("metadata.json", metadata)
