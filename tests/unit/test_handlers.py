"""Handlers do real work: outputs derive from the input and the task id, nothing else."""

from __future__ import annotations

import gzip
import hashlib
import json
import time

import pytest

from background_worker.context import TaskCancelled, WorkerContext
from example_tasks.data_transformation import synthetic_dataset, transform_data
from example_tasks.file_processing import process_file
from taskcore.envelope import build_envelope
from taskcore.errors import MissingInputError, TaskTimeoutError
from taskcore.settings import Settings
from tests.registries import builtin_registry
from tests.unit.fakes import FakeBucket


def make_context(task_type, fields, bucket=None, time_limit=30.0):
    settings = Settings.from_env({}, bucket_name="test-bucket", max_processing_time_seconds=0.2)
    envelope, payload = build_envelope(builtin_registry(), task_type, fields)
    bucket = bucket or FakeBucket()
    ctx = WorkerContext(settings, envelope, bucket, delivery_attempt=1, time_limit=time_limit)
    return ctx, payload, bucket


def output(bucket, ctx, name):
    return bucket.objects[f"outputs/{ctx.task_id}/{name}"][0]


def test_file_processing_writes_normalized_text_and_metadata():
    bucket = FakeBucket()
    bucket.blob("uploads/a.txt").upload_from_string(
        b"one two\r\nthree  \n\n", content_type="text/plain"
    )
    ctx, payload, _ = make_context("file_processing", {"filename": "a.txt"}, bucket)
    process_file(ctx, payload)
    assert output(bucket, ctx, "processed.txt") == b"one two\nthree\n"
    meta = json.loads(output(bucket, ctx, "metadata.json"))
    assert meta["sha256"] == hashlib.sha256(b"one two\r\nthree  \n\n").hexdigest()
    assert (meta["line_count"], meta["word_count"], meta["size"]) == (3, 3, 18)
    assert meta["content_type"] == "text/plain"


def test_file_processing_compresses_binary_inputs():
    bucket = FakeBucket()
    blob = bytes(range(256)) * 4
    bucket.blob("uploads/b.bin").upload_from_string(blob, content_type="application/octet-stream")
    ctx, payload, _ = make_context("file_processing", {"filename": "b.bin"}, bucket)
    process_file(ctx, payload)
    assert gzip.decompress(output(bucket, ctx, "processed.gz")) == blob
    assert json.loads(output(bucket, ctx, "metadata.json"))["is_text"] is False


def test_missing_input_is_a_permanent_failure_naming_the_object():
    ctx, payload, _ = make_context("file_processing", {"filename": "nope.txt"})
    with pytest.raises(MissingInputError, match="uploads/nope.txt"):
        process_file(ctx, payload)


def test_outputs_are_create_only_and_a_rerun_adds_nothing():
    bucket = FakeBucket()
    bucket.blob("uploads/a.txt").upload_from_string(b"x", content_type="text/plain")
    ctx, payload, _ = make_context("file_processing", {"filename": "a.txt"}, bucket)
    process_file(ctx, payload)
    before = dict(bucket.objects)
    process_file(ctx, payload)
    assert bucket.objects == before


def test_processing_time_is_capped_and_honours_the_time_limit():
    bucket = FakeBucket()
    bucket.blob("uploads/a.txt").upload_from_string(b"x", content_type="text/plain")
    ctx, payload, _ = make_context(
        "file_processing", {"filename": "a.txt", "processing_time": 100}, bucket, 0.05
    )
    with pytest.raises(TaskTimeoutError):
        process_file(ctx, payload)
    assert not any(name.startswith("outputs/") for name in bucket.objects)


def test_cancelled_task_refuses_to_write():
    ctx, payload, bucket = make_context("data_transformation", {"dataset_size": 10})
    ctx.cancelled.set()
    with pytest.raises(TaskCancelled):
        transform_data(ctx, payload)
    assert bucket.writes == 0


def test_synthetic_dataset_is_deterministic():
    assert synthetic_dataset(20) == synthetic_dataset(20)
    assert len(synthetic_dataset(20)) == 20


def test_normalize_scales_numeric_fields_to_unit_range():
    records = [{"a": 10, "b": "x"}, {"a": 20, "b": "y"}, {"a": 15, "b": "z"}]
    ctx, payload, bucket = make_context("data_transformation", {"records": records})
    transform_data(ctx, payload)
    result = json.loads(output(bucket, ctx, "results.json"))
    assert [r["a"] for r in result["records"]] == [0.0, 1.0, 0.5]
    assert result["bounds"]["a"] == {"min": 10, "max": 20}


def test_aggregate_groups_and_sums():
    records = [{"k": "x", "v": 1}, {"k": "x", "v": 3}, {"k": "y", "v": 5}]
    ctx, payload, bucket = make_context(
        "data_transformation", {"records": records, "transformation": "aggregate", "group_by": "k"}
    )
    transform_data(ctx, payload)
    groups = json.loads(output(bucket, ctx, "results.json"))["groups"]
    assert groups["x"]["count"] == 2 and groups["x"]["v"]["sum"] == 4
    assert groups["y"]["v"]["mean"] == 5


def test_filter_keeps_matching_records():
    records = [{"v": 1}, {"v": 5}, {"v": 9}, {"w": 100}]
    ctx, payload, bucket = make_context(
        "data_transformation",
        {
            "records": records,
            "transformation": "filter",
            "filter": {"field": "v", "op": "gte", "value": 5},
        },
    )
    transform_data(ctx, payload)
    kept = json.loads(output(bucket, ctx, "results.json"))["records"]
    assert kept == [{"v": 5}, {"v": 9}]


def test_csv_input_is_parsed_with_numbers():
    bucket = FakeBucket()
    bucket.blob("uploads/d.csv").upload_from_string(b"k,v\nx,1\ny,2.5\n", content_type="text/csv")
    ctx, payload, _ = make_context(
        "data_transformation",
        {"source_uri": "gs://test-bucket/uploads/d.csv", "transformation": "aggregate"},
        bucket,
    )
    transform_data(ctx, payload)
    result = json.loads(output(bucket, ctx, "results.json"))
    assert result["groups"]["all"]["v"]["sum"] == 3.5


def test_a_handler_that_overruns_its_limit_cannot_write_afterwards():
    ctx, _, bucket = make_context("data_transformation", {"dataset_size": 5}, time_limit=0.05)
    time.sleep(0.1)  # a handler stuck in code that never checks its deadline
    with pytest.raises(TaskTimeoutError):
        ctx.outputs.write("late.json", b"{}", "application/json")
    assert bucket.writes == 0
