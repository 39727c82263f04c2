"""data_transformation: normalize, aggregate or filter records; write results.json."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskcore import PermanentTaskError, TaskContext, TaskPayload, task
from taskcore.payloads import parse_gs_uri


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


CATEGORIES = ("alpha", "beta", "gamma", "delta")


def synthetic_dataset(size: int) -> list[dict[str, Any]]:
    """A deterministic dataset of `size` records (same size, same records, every time)."""
    rng = random.Random(size)
    return [
        {
            "id": i,
            "category": CATEGORIES[i % len(CATEGORIES)],
            "value": round(rng.uniform(0, 1000), 4),
            "quantity": rng.randint(1, 100),
        }
        for i in range(size)
    ]


def parse_records(data: bytes, name: str) -> list[dict[str, Any]]:
    """Records from a JSONL, JSON (array of objects) or CSV object's bytes."""
    try:
        text = data.decode("utf-8")
        if name.endswith(".csv"):
            return [_coerce_row(row) for row in csv.DictReader(io.StringIO(text))]
        if name.endswith(".jsonl"):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise PermanentTaskError(f"cannot parse {name}: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PermanentTaskError(f"{name} must hold JSON objects, one per record")
    return records


def _coerce_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        try:
            out[key] = int(value)
        except (TypeError, ValueError):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                out[key] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def numeric_fields(records: list[dict[str, Any]], requested: list[str] | None) -> list[str]:
    """The fields to operate on: those requested, or every field numeric in all records."""
    if requested:
        return requested
    if not records:
        return []
    candidates = [k for k, v in records[0].items() if _is_number(v) and k != "id"]
    return [k for k in candidates if all(_is_number(r.get(k)) for r in records)]


def normalize(records: list[dict[str, Any]], fields: list[str]) -> dict[str, Any]:
    """Min-max scale each field to [0, 1] (a constant field becomes 0.0)."""
    bounds = {}
    for f in fields:
        values = [r[f] for r in records if _is_number(r.get(f))]
        bounds[f] = (min(values), max(values)) if values else (0.0, 0.0)
    out = []
    for record in records:
        scaled = dict(record)
        for f in fields:
            low, high = bounds[f]
            if _is_number(record.get(f)):
                scaled[f] = 0.0 if high == low else round((record[f] - low) / (high - low), 6)
        out.append(scaled)
    return {"bounds": {f: {"min": lo, "max": hi} for f, (lo, hi) in bounds.items()}, "records": out}


def aggregate(
    records: list[dict[str, Any]], fields: list[str], group_by: str | None
) -> dict[str, Any]:
    """count/sum/mean/min/max of each field, per group_by value (or overall)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[str(record.get(group_by)) if group_by else "all"].append(record)
    result = {}
    for key in sorted(groups):
        rows = groups[key]
        stats: dict[str, Any] = {"count": len(rows)}
        for f in fields:
            values = [r[f] for r in rows if _is_number(r.get(f))]
            if values:
                total = math.fsum(values)
                stats[f] = {
                    "sum": round(total, 6),
                    "mean": round(total / len(values), 6),
                    "min": min(values),
                    "max": max(values),
                }
        result[key] = stats
    return {"group_by": group_by, "groups": result}


_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "contains": lambda a, b: b in a,
}


def filter_records(records: list[dict[str, Any]], condition: RecordFilter) -> dict[str, Any]:
    """Records meeting the condition; records lacking the field or of another type never do."""
    op = _OPS[condition.op]
    kept = []
    for record in records:
        if condition.field not in record:
            continue
        try:
            if op(record[condition.field], condition.value):
                kept.append(record)
        except TypeError:
            continue
    return {"condition": condition.model_dump(), "records": kept}


def load_records(ctx: TaskContext, payload: DataTransformationPayload) -> tuple[list[dict], str]:
    """The task's records and a description of where they came from."""
    if payload.records is not None:
        return payload.records, "inline"
    if payload.source_uri:
        data, _ = ctx.read_input(payload.source_uri)
        return parse_records(data, payload.source_uri), payload.source_uri
    return synthetic_dataset(payload.dataset_size), f"synthetic:{payload.dataset_size}"


@task("data_transformation")
def transform_data(ctx: TaskContext, payload: DataTransformationPayload) -> None:
    """Normalize, aggregate or filter records; write a results JSON."""
    records, source = load_records(ctx, payload)
    ctx.check_alive()
    fields = numeric_fields(records, payload.fields)
    if payload.transformation == "normalize":
        result = normalize(records, fields)
    elif payload.transformation == "aggregate":
        result = aggregate(records, fields, payload.group_by)
    else:
        result = filter_records(records, payload.filter)
    ctx.outputs.write_json(
        "results.json",
        {
            "task_id": ctx.task_id,
            "transformation": payload.transformation,
            "source": source,
            "input_records": len(records),
            "fields": fields,
            **result,
        },
    )
