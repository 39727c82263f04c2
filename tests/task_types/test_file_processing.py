"""file_processing, tested as any task type is: `run_task` runs it in memory, no emulator."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from example_tasks.file_processing import process_file
from taskcore.testing import run_task


def test_text_input_is_normalized_and_described():
    run = run_task(
        process_file, filename="a.txt", inputs={"uploads/a.txt": b"one two\r\nthree  \n\n"}
    )

    assert run.succeeded
    assert run.text("processed.txt") == "one two\nthree\n"
    meta = run.json("metadata.json")
    assert meta["sha256"] == hashlib.sha256(b"one two\r\nthree  \n\n").hexdigest()
    assert (meta["line_count"], meta["word_count"], meta["size"]) == (3, 3, 18)
    assert meta["content_type"] == "text/plain"


def test_binary_input_is_compressed():
    data = bytes(range(256)) * 4
    run = run_task(
        process_file,
        filename="b.bin",
        inputs={"uploads/b.bin": (data, "application/octet-stream")},
    )

    assert gzip.decompress(run.outputs["processed.gz"]) == data
    assert run.json("metadata.json")["is_text"] is False


def test_a_missing_input_is_a_permanent_failure_naming_the_object():
    run = run_task(process_file, filename="nope.txt")

    assert run.failure.permanent and run.failure.error_type == "missing_input"
    assert "uploads/nope.txt" in run.failure.message
    assert run.outputs == {}


def test_processing_time_is_capped_by_the_setting_and_costs_no_real_time():
    run = run_task(
        process_file,
        filename="a.txt",
        processing_time=100,
        inputs={"uploads/a.txt": b"x"},
    )

    assert run.succeeded
    assert run.slept_seconds == pytest.approx(30.0), "MAX_PROCESSING_TIME_SECONDS caps the work"


def test_work_past_the_time_limit_fails_and_writes_nothing():
    run = run_task(
        process_file,
        filename="a.txt",
        processing_time=20,
        time_limit=5,
        inputs={"uploads/a.txt": b"x"},
    )

    assert run.failure.error_type == "timeout" and not run.failure.permanent
    assert run.outputs == {}
