"""The base of every task payload model, and checks for the object names payloads carry."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import BaseModel, ConfigDict

# GCS object names are at most 1024 bytes; we reserve room for our own prefixes.
MAX_OBJECT_NAME_BYTES = 900
# Control (C0, DEL, C1) and format characters (bidi overrides, zero-width, ...) and lone
# surrogates: a name holding one is not what an operator's terminal or browser shows.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def check_object_name(name: str) -> str:
    """Reject a caller-supplied object name that could escape its prefix or break GCS."""
    if not name or not name.strip():
        raise ValueError("must not be empty")
    refused = next((c for c in name if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if refused is not None:
        raise ValueError(
            f"must not contain control or format characters (found U+{ord(refused):04X})"
        )
    if len(name.encode("utf-8")) > MAX_OBJECT_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_OBJECT_NAME_BYTES} bytes")
    if name.startswith("/") or "\\" in name:
        raise ValueError("must be a relative name without backslashes")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError("must not contain '.', '..' or empty path segments")
    return name


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """Split gs://bucket/name into (bucket, name), checking the name."""
    if not uri.startswith("gs://"):
        raise ValueError("must be a gs://bucket/object URI")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError("must name a bucket")
    return bucket, check_object_name(name)


class _Input:
    """Marks a payload field as naming an input object (see InputUri)."""

    def __repr__(self) -> str:
        return "INPUT"


INPUT = _Input()

# A payload field holding a gs:// URI the task reads. The API checks it (the pipeline's bucket,
# INPUT_PREFIXES, size) and pins the generation it saw; the worker reads exactly that.
# For an optional one: Annotated[str | None, INPUT].
InputUri = Annotated[str, INPUT]


class TaskPayload(BaseModel):
    """Base of every payload model: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    def input_uris(self, bucket_name: str) -> list[str]:
        """The objects this task will read: the values of its InputUri fields.

        Override it when an input is named another way (file_processing's `filename`).
        """
        uris = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value and any(marker is INPUT for marker in info.metadata):
                uris.append(value)
        return uris
