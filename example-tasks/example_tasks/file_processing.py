"""file_processing: read an uploaded object, write a processed copy and its metadata."""

from __future__ import annotations

import gzip
import hashlib
import unicodedata

from pydantic import Field, field_validator

from taskcore import TaskContext, TaskPayload, task
from taskcore.payloads import check_object_name, parse_gs_uri


class FileProcessingPayload(TaskPayload):
    """Process one uploaded object: write a processed copy and a metadata JSON."""

    filename: str = Field(
        "sample.txt",
        description="Object name under uploads/ in the bucket.",
        examples=["report.csv"],
    )
    source_uri: str | None = Field(
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


@task("file_processing")
def process_file(ctx: TaskContext, payload: FileProcessingPayload) -> None:
    """Read an uploaded object; write a processed copy and its metadata.

    Writes processed.txt (normalised text) or processed.gz (binary) and metadata.json.
    """
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
