"""data_transformation: normalize, aggregate or filter records; write results.json.

Records stream from their source (inline, a synthetic dataset, or a JSONL/CSV object) one at
a time, and results.json streams out as it is produced: a task's memory does not grow with
its dataset. normalize reads its source twice (bounds, then scaled records); aggregate keeps
one accumulator per group (at most MAX_GROUPS groups); filter keeps nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskcore import PermanentTaskError, TaskContext, TaskPayload, task
from taskcore.payloads import INPUT, parse_gs_uri

CATEGORIES = ("alpha", "beta", "gamma", "delta")
MAX_DATASET_SIZE = 1_000_000
MAX_INLINE_RECORDS = 100_000
# Inline records × their fields: what one request may ask a worker to chew through.
MAX_INLINE_CELLS = 1_000_000
MAX_FIELDS = 1_000
MAX_GROUPS = 10_000
# A .json input is one array, parsed whole: kept small. .jsonl and .csv stream.
MAX_JSON_ARRAY_BYTES = 8 * 1024 * 1024
# The time limit (and a stop) is checked this often, in records.
CHECK_EVERY = 500


def _finite(value: Any, where: str) -> Any:
    """Refuse NaN and infinities anywhere in value: results must stay valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} holds a non-finite number ({value})")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite(item, f"{where}[{index}]")
    return value


class RecordFilter(BaseModel):
    """A filter condition: keep records whose `field` compares to `value` by `op`."""

    model_config = ConfigDict(extra="forbid")

    field: str
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "contains"] = "eq"
    value: Any

    @field_validator("value")
    @classmethod
    def _finite_value(cls, value: Any) -> Any:
        return _finite(value, "filter.value")


class DataTransformationPayload(TaskPayload):
    """Transform a dataset (inline records, a JSONL/CSV object, or synthetic) into a results JSON."""

    transformation: Literal["normalize", "aggregate", "filter"] = Field(
        "normalize", description="normalize, aggregate (or the recipe's 'aggregation') or filter."
    )
    dataset_size: int = Field(
        100,
        ge=1,
        le=MAX_DATASET_SIZE,
        description=f"Size of the synthetic dataset used when no records are given "
        f"(at most {MAX_DATASET_SIZE:,}).",
    )
    records: list[dict[str, Any]] | None = Field(
        None,
        max_length=MAX_INLINE_RECORDS,
        description=f"Inline records (objects); records × fields at most {MAX_INLINE_CELLS:,}.",
    )
    source_uri: Annotated[str | None, INPUT] = Field(
        None, description="gs://<BUCKET_NAME>/uploads/<object>.jsonl, .csv or .json input."
    )
    fields: list[str] | None = Field(
        None,
        max_length=MAX_FIELDS,
        description="Numeric fields to normalize or aggregate; default: every numeric field.",
    )
    group_by: str | None = Field(
        None, description=f"aggregate: group records by this field (at most {MAX_GROUPS:,} groups)."
    )
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

    @field_validator("records")
    @classmethod
    def _bounded_records(cls, value: list[dict[str, Any]] | None):
        if value is None:
            return value
        cells = 0
        for index, record in enumerate(value):
            if len(record) > MAX_FIELDS:
                raise ValueError(f"record {index} has more than {MAX_FIELDS} fields")
            cells += len(record)
            _finite(record, f"records[{index}]")
        if cells > MAX_INLINE_CELLS:
            raise ValueError(f"records hold {cells:,} fields in all; at most {MAX_INLINE_CELLS:,}")
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


# --- where records come from -------------------------------------------------------------


def synthetic_records(size: int) -> Iterator[dict[str, Any]]:
    """A deterministic dataset of `size` records (same size, same records, every time)."""
    rng = random.Random(size)
    for i in range(size):
        yield {
            "id": i,
            "category": CATEGORIES[i % len(CATEGORIES)],
            "value": round(rng.uniform(0, 1000), 4),
            "quantity": rng.randint(1, 100),
        }


def synthetic_dataset(size: int) -> list[dict[str, Any]]:
    """The synthetic dataset as a list (tests; the task itself streams it)."""
    return list(synthetic_records(size))


def _no_constants(name: str):
    raise ValueError(f"non-finite number {name} (results must be valid JSON)")


def _coerce(value: str | None) -> Any:
    """A CSV cell as an int or a finite float when it reads as one, else the text."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value  # "nan", "inf" stay text


def _jsonl_records(stream, name: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), start=1):
        if not line.strip():
            continue
        record = json.loads(line, parse_constant=_no_constants)
        if not isinstance(record, dict):
            raise PermanentTaskError(f"{name} line {number} is not a JSON object")
        yield record


def _csv_records(stream, name: str) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
    for row in reader:
        if None in row or None in row.values():
            raise PermanentTaskError(
                f"{name} row {reader.line_num} has {'more' if None in row else 'fewer'} "
                "values than the header has columns"
            )
        yield {key: _coerce(value) for key, value in row.items()}


def _json_array_records(stream, name: str) -> Iterator[dict[str, Any]]:
    if stream.size > MAX_JSON_ARRAY_BYTES:
        raise PermanentTaskError(
            f"{name} is a JSON array of {stream.size} bytes; .json inputs are read whole and "
            f"limited to {MAX_JSON_ARRAY_BYTES} (use .jsonl for more)"
        )
    records = json.loads(stream.readall(), parse_constant=_no_constants)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PermanentTaskError(f"{name} must hold JSON objects, one per record")
    yield from records


class RecordSource:
    """The task's records, as many passes over them as a transformation needs."""

    def __init__(self, ctx: TaskContext, payload: DataTransformationPayload) -> None:
        self.ctx = ctx
        self.payload = payload
        if payload.records is not None:
            self.description = "inline"
        elif payload.source_uri:
            self.description = payload.source_uri
        else:
            self.description = f"synthetic:{payload.dataset_size}"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        payload, ctx = self.payload, self.ctx
        if payload.records is not None:
            records: Iterator[dict[str, Any]] = iter(payload.records)
        elif payload.source_uri:
            yield from self._from_object(payload.source_uri)
            return
        else:
            records = synthetic_records(payload.dataset_size)
        for count, record in enumerate(records):
            if count % CHECK_EVERY == 0:
                ctx.check_alive()
            yield record

    def _from_object(self, uri: str) -> Iterator[dict[str, Any]]:
        name = uri.rsplit("/", 1)[-1]
        read = {".csv": _csv_records, ".jsonl": _jsonl_records}.get(
            name[name.rfind(".") :], _json_array_records
        )
        with self.ctx.open_input(uri) as stream:
            for count, record in enumerate(read(stream, name)):
                if count % CHECK_EVERY == 0:
                    self.ctx.check_alive()
                yield record


# --- the transformations ------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def candidate_fields(first: dict[str, Any] | None, requested: list[str] | None) -> list[str]:
    """The fields to operate on: those requested, or those numeric in the first record."""
    if requested:
        return list(requested)
    if first is None:
        return []
    return [k for k, v in first.items() if _is_number(v) and k != "id"]


class FieldStats:
    """Count, compensated sum, min and max of one field's numeric values."""

    __slots__ = ("count", "total", "compensation", "low", "high")

    def __init__(self) -> None:
        self.count, self.total, self.compensation = 0, 0.0, 0.0
        self.low = self.high = None

    def add(self, value: float) -> None:
        self.count += 1
        # Neumaier's summation: as exact as math.fsum over the list, without the list.
        total = self.total + value
        if abs(self.total) >= abs(value):
            self.compensation += (self.total - total) + value
        else:
            self.compensation += (value - total) + self.total
        self.total = total
        self.low = value if self.low is None or value < self.low else self.low
        self.high = value if self.high is None or value > self.high else self.high

    def summary(self) -> dict[str, Any]:
        total = self.total + self.compensation
        return {
            "sum": round(total, 6),
            "mean": round(total / self.count, 6),
            "min": self.low,
            "max": self.high,
        }


class FieldScan:
    """One pass's view of the candidate fields: stats, and whether each was always numeric."""

    def __init__(self, requested: list[str] | None) -> None:
        self.requested = requested
        self.fields: list[str] | None = None
        self.always_numeric: dict[str, bool] = {}
        self.records = 0

    def see(self, record: dict[str, Any], stats: dict[str, FieldStats]) -> None:
        if self.fields is None:
            self.fields = candidate_fields(record, self.requested)
            self.always_numeric = dict.fromkeys(self.fields, True)
        self.records += 1
        for name in self.fields:
            value = record.get(name)
            if _is_number(value):
                stats[name].add(value)
            else:
                self.always_numeric[name] = False

    def chosen(self) -> list[str]:
        """The fields reported: those requested, or the candidates numeric in every record."""
        if self.requested:
            return list(self.requested)
        return [name for name in self.fields or [] if self.always_numeric[name]]


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "contains": lambda a, b: b in a,
}


def _matches(record: dict[str, Any], condition: RecordFilter) -> bool:
    if condition.field not in record:
        return False
    try:
        return bool(_OPS[condition.op](record[condition.field], condition.value))
    except TypeError:
        return False  # a record whose field is of another type never matches


class ResultsWriter:
    """results.json, written as it is produced: one JSON object, keys in order given."""

    def __init__(self, out) -> None:
        self.out = out
        self._pending: list[str] = []
        self._size = 0
        self._keys = 0
        self._items = 0
        self._emit("{")

    def _emit(self, text: str) -> None:
        self._pending.append(text)
        self._size += len(text)
        if self._size >= 256 * 1024:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.out.write("".join(self._pending).encode("utf-8"))
            self._pending, self._size = [], 0

    def key(self, name: str, value: Any) -> None:
        self._emit(("," if self._keys else "") + json.dumps(name) + ":" + _dump(value))
        self._keys += 1

    def start_list(self, name: str) -> None:
        self._emit(("," if self._keys else "") + json.dumps(name) + ":[")
        self._keys += 1
        self._items = 0

    def item(self, value: Any) -> None:
        self._emit(("," if self._items else "") + _dump(value))
        self._items += 1

    def end_list(self) -> None:
        self._emit("]")

    def close(self) -> None:
        self._emit("}\n")
        self.flush()


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))


def normalize(source: RecordSource, writer: ResultsWriter, requested) -> FieldScan:
    """Min-max scale each field to [0, 1] (a constant field becomes 0.0): two passes."""
    scan, stats = FieldScan(requested), _Stats()
    for record in source:
        scan.see(record, stats)
    fields = scan.chosen()
    bounds = {f: (stats[f].low, stats[f].high) if stats[f].count else (0.0, 0.0) for f in fields}
    writer.key("bounds", {f: {"min": lo, "max": hi} for f, (lo, hi) in bounds.items()})
    writer.start_list("records")
    for record in source:
        scaled = dict(record)
        for f in fields:
            low, high = bounds[f]
            if _is_number(record.get(f)):
                scaled[f] = 0.0 if high == low else round((record[f] - low) / (high - low), 6)
        writer.item(scaled)
    writer.end_list()
    return scan


def aggregate(source: RecordSource, writer: ResultsWriter, requested, group_by) -> FieldScan:
    """count/sum/mean/min/max of each field, per group_by value (or overall): one pass."""
    scan = FieldScan(requested)
    groups: dict[str, _Stats] = {}
    counts: dict[str, int] = {}
    for record in source:
        key = str(record.get(group_by)) if group_by else "all"
        if key not in groups:
            if len(groups) >= MAX_GROUPS:
                raise PermanentTaskError(
                    f"group_by {group_by!r} makes more than {MAX_GROUPS} groups"
                )
            groups[key], counts[key] = _Stats(), 0
        counts[key] += 1
        scan.see(record, groups[key])
    fields = scan.chosen()
    result = {}
    for key in sorted(groups):
        summary: dict[str, Any] = {"count": counts[key]}
        for f in fields:
            if groups[key][f].count:
                summary[f] = groups[key][f].summary()
        result[key] = summary
    writer.key("group_by", group_by)
    writer.key("groups", result)
    return scan


def filter_records(source: RecordSource, writer: ResultsWriter, condition, requested):
    """Records meeting the condition; records lacking the field or of another type never do."""
    scan, stats = FieldScan(requested), _Stats()
    writer.key("condition", condition.model_dump())
    writer.start_list("records")
    for record in source:
        scan.see(record, stats)
        if _matches(record, condition):
            writer.item(record)
    writer.end_list()
    return scan


class _Stats(dict):
    """FieldStats by field name, made on first use."""

    def __missing__(self, name: str) -> FieldStats:
        stats = self[name] = FieldStats()
        return stats


@task("data_transformation")
def transform_data(ctx: TaskContext, payload: DataTransformationPayload) -> None:
    """Normalize, aggregate or filter records; write a results JSON."""
    source = RecordSource(ctx, payload)
    with ctx.outputs.open("results.json", "application/json") as out:
        writer = ResultsWriter(out)
        writer.key("task_id", ctx.task_id)
        writer.key("transformation", payload.transformation)
        writer.key("source", source.description)
        if payload.transformation == "normalize":
            scan = normalize(source, writer, payload.fields)
        elif payload.transformation == "aggregate":
            scan = aggregate(source, writer, payload.fields, payload.group_by)
        else:
            scan = filter_records(source, writer, payload.filter, payload.fields)
        writer.key("input_records", scan.records)
        writer.key("fields", scan.chosen())
        writer.close()
