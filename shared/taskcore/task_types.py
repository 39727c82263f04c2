"""The registry of task types and their typed payload models (pydantic v2).

The API validates submissions against these models and the worker parses messages
with the same ones, so a task the API accepted is a task the worker understands.
Adding a task type: define a payload model, `register` it here, and register a
handler for the same name in `background_worker.handlers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskcore.errors import InvalidTaskError

# GCS object names are at most 1024 bytes; we reserve room for our own prefixes.
MAX_OBJECT_NAME_BYTES = 900
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def check_object_name(name: str) -> str:
    """Reject a caller-supplied object name that could escape its prefix or break GCS."""
    if not name or not name.strip():
        raise ValueError("must not be empty")
    if len(name.encode("utf-8")) > MAX_OBJECT_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_OBJECT_NAME_BYTES} bytes")
    if _CONTROL_CHARS.search(name):
        raise ValueError("must not contain NUL or control characters")
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


class TaskPayload(BaseModel):
    """Base of every payload model: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


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


class RecordFilter(BaseModel):
    """A filter condition: keep records whose `field` compares to `value` by `op`."""

    model_config = ConfigDict(extra="forbid")

    field: str
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "contains"] = "eq"
    value: Any


class DataTransformationPayload(TaskPayload):
    """Transform a dataset (inline records, a JSONL/CSV object, or synthetic) into a results JSON."""

    transformation: Literal["normalize", "aggregate", "filter"] = Field(
        "normalize", description="normalize, aggregate (or the recipe's 'aggregation') or filter."
    )
    dataset_size: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="Size of the synthetic dataset used when no records are given.",
    )
    records: list[dict[str, Any]] | None = Field(
        None, max_length=100_000, description="Inline records (objects)."
    )
    source_uri: str | None = Field(
        None, description="gs://<BUCKET_NAME>/<object>.jsonl or .csv input."
    )
    fields: list[str] | None = Field(
        None, description="Numeric fields to normalize or aggregate; default: every numeric field."
    )
    group_by: str | None = Field(None, description="aggregate: group records by this field.")
    filter: RecordFilter | None = Field(
        None, description="filter: the condition records must meet."
    )

    @model_validator(mode="before")
    @classmethod
    def _recipe_spelling(cls, data: Any) -> Any:
        # The recipe spelled it "aggregation"; existing clients keep working.
        if isinstance(data, dict) and data.get("transformation") == "aggregation":
            data = {**data, "transformation": "aggregate"}
        return data

    @field_validator("source_uri")
    @classmethod
    def _safe_source_uri(cls, value: str | None) -> str | None:
        if value is not None:
            _, name = parse_gs_uri(value)
            if not name.endswith((".jsonl", ".csv", ".json")):
                raise ValueError("must name a .jsonl, .json or .csv object")
        return value

    @model_validator(mode="after")
    def _filter_needs_condition(self) -> DataTransformationPayload:
        if self.transformation == "filter" and self.filter is None:
            raise ValueError(
                "transformation 'filter' needs a 'filter' condition {field, op, value}"
            )
        if self.records is not None and self.source_uri is not None:
            raise ValueError("give either 'records' or 'source_uri', not both")
        return self


@dataclass(frozen=True)
class TaskType:
    """A registered task type: its name, payload model and time limit."""

    name: str
    payload_model: type[TaskPayload]
    time_limit_seconds: float | None = None
    description: str = ""

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this type's payload."""
        return self.payload_model.model_json_schema()


class TaskTypeRegistry:
    """Task types by name; the API and the worker share one."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    def register(self, task_type: TaskType) -> TaskType:
        """Add a task type; a name registers once."""
        if task_type.name in self._types:
            raise ValueError(f"task type {task_type.name!r} is already registered")
        self._types[task_type.name] = task_type
        return task_type

    def get(self, name: str) -> TaskType:
        """The task type called `name`, or InvalidTaskError listing the known ones."""
        try:
            return self._types[name]
        except KeyError:
            raise InvalidTaskError(
                f"unknown task_type {name!r}; known types: {', '.join(self.names())}",
                error_type="unknown_task_type",
            ) from None

    def names(self) -> list[str]:
        """Registered task type names, sorted."""
        return sorted(self._types)

    def __iter__(self):
        return iter(self._types[name] for name in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def validate_payload(self, name: str, fields: dict[str, Any]) -> TaskPayload:
        """Validate fields against the type's model, raising InvalidTaskError with field errors."""
        task_type = self.get(name)
        try:
            return task_type.payload_model.model_validate(fields)
        except ValidationError as exc:
            details = field_errors(exc)
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
            raise InvalidTaskError(
                f"invalid {name} payload: {summary}", error_type="schema_violation", details=details
            ) from None


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """A pydantic ValidationError as a JSON-friendly list of {field, message, type}."""
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False)
    ]


def default_registry() -> TaskTypeRegistry:
    """The built-in task types: the recipe's file_processing and data_transformation."""
    registry = TaskTypeRegistry()
    registry.register(
        TaskType(
            "file_processing",
            FileProcessingPayload,
            description="Read an uploaded object; write a processed copy and its metadata.",
        )
    )
    registry.register(
        TaskType(
            "data_transformation",
            DataTransformationPayload,
            description="Normalize, aggregate or filter records; write a results JSON.",
        )
    )
    return registry
