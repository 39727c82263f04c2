"""The worker drains the subscription, writes outputs, dead-letters failures, and exits."""

from __future__ import annotations

import json
import time

import pytest

from background_worker.worker import drain_subscription
from tests.integration.helpers import (
    outputs_of,
    publish_raw,
    publish_tasks,
    pull_all,
    status_of,
    upload,
)
from tests.registries import builtin_registry

pytestmark = pytest.mark.integration


def test_drain_writes_outputs_for_each_task_and_exits_when_idle(pipeline):
    upload(pipeline, "report.txt", b"hello world\r\nsecond line  \n")
    ids = publish_tasks(
        pipeline,
        [
            ("file_processing", {"filename": "report.txt"}),
            ("data_transformation", {"dataset_size": 50, "transformation": "aggregation"}),
        ],
    )
    started = time.monotonic()
    summary = drain_subscription(pipeline)
    elapsed = time.monotonic() - started

    assert summary.stop_reason == "idle"
    assert summary.outcomes["succeeded"] == 2
    assert elapsed < 30
    file_outputs = outputs_of(pipeline, ids[0])
    assert file_outputs["processed.txt"] == b"hello world\nsecond line\n"
    metadata = json.loads(file_outputs["metadata.json"])
    assert metadata["line_count"] == 2 and metadata["word_count"] == 4
    results = json.loads(outputs_of(pipeline, ids[1])["results.json"])
    assert results["transformation"] == "aggregate"
    assert sum(g["count"] for g in results["groups"].values()) == 50
    status = status_of(pipeline, ids[0])
    assert status.state == "succeeded" and status.attempts == 1
    assert sorted(ref.name for ref in status.outputs) == ["metadata.json", "processed.txt"]
    (run_prefix,) = {ref.uri.rsplit("/", 1)[0] for ref in status.outputs}
    assert run_prefix.startswith(f"gs://{pipeline.bucket_name}/outputs/{ids[0]}/1-"), (
        "one run's outputs, under the run's own prefix"
    )
    assert status.last_error is None and status.run is None


def test_missing_input_is_dead_lettered_at_once_with_reason(pipeline):
    (task_id,) = publish_tasks(pipeline, [("file_processing", {"filename": "absent.txt"})])
    summary = drain_subscription(pipeline)

    assert summary.outcomes["dead_lettered"] == 1
    (dead,) = pull_all(pipeline, pipeline.dlq_subscription_path)
    attrs = dict(dead.message.attributes)
    assert attrs["error_type"] == "missing_input"
    assert "absent.txt" in attrs["error_message"]
    assert attrs["task_id"] == task_id
    assert attrs["source_subscription"] == pipeline.subscription_path
    assert json.loads(dead.message.data)["task_id"] == task_id


def test_always_failing_handler_is_retried_then_dead_lettered_after_max_attempts(pipeline):
    calls = []

    def broken(ctx, payload):
        calls.append(ctx.attempt)
        raise RuntimeError("backend said no")

    registry = builtin_registry().with_handlers(data_transformation=broken)
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    # The emulator redelivers a nacked message after a few seconds whatever the backoff says;
    # the idle window must outlast that for all attempts to land in one execution.
    summary = drain_subscription(pipeline.replace(idle_timeout_seconds=6), task_types=registry)

    assert calls == [1, 2, 3, 4, 5]
    assert summary.outcomes["retried"] == 4
    assert summary.outcomes["dead_lettered"] == 1
    (dead,) = pull_all(pipeline, pipeline.dlq_subscription_path)
    attrs = dict(dead.message.attributes)
    assert attrs["error_type"] == "RuntimeError"
    assert "backend said no" in attrs["error_message"]
    assert attrs["attempts"] == "5" and attrs["failures"] == "5"
    assert attrs["task_id"] == task_id
    assert outputs_of(pipeline, task_id) == {}
    status = status_of(pipeline, task_id)
    assert status.state == "dead_lettered" and status.attempts == 5
    assert status.failures == 5 and len(status.errors) == 5
    assert "backend said no" in status.last_error.message


def test_execution_stops_pulling_at_max_messages_and_leaves_the_rest_queued(pipeline):
    publish_tasks(pipeline, [("data_transformation", {"dataset_size": 3})] * 8)
    summary = drain_subscription(pipeline.replace(max_messages=3, worker_concurrency=2))

    assert summary.stop_reason == "max_messages"
    assert summary.received == 3 and summary.outcomes["succeeded"] == 3
    rest = drain_subscription(pipeline)
    assert rest.outcomes["succeeded"] == 5


def test_execution_stops_pulling_when_its_run_budget_is_spent(pipeline):
    upload(pipeline, "slow.txt", b"x\n")
    publish_tasks(
        pipeline, [("file_processing", {"filename": "slow.txt", "processing_time": 1})] * 6
    )
    started = time.monotonic()
    summary = drain_subscription(
        pipeline.replace(
            run_budget_seconds=0.5, worker_concurrency=2, max_processing_time_seconds=1
        )
    )

    assert summary.stop_reason == "run_budget"
    assert summary.received < 6, "no pulls after the budget"
    assert summary.outcomes["succeeded"] == summary.received, "in-flight work finished"
    assert time.monotonic() - started < 5


def test_invalid_task_with_a_task_id_gets_a_dead_lettered_status_record(pipeline):
    body = json.dumps(
        {
            "task_id": "bad-task-1",
            "task_type": "data_transformation",
            "payload": {"dataset_size": 0},
        }
    ).encode()
    publish_raw(pipeline, body, task_id="bad-task-1", task_type="data_transformation")
    summary = drain_subscription(pipeline)

    assert summary.outcomes["dead_lettered"] == 1
    status = status_of(pipeline, "bad-task-1")
    assert status.state == "dead_lettered"
    assert status.last_error.type == "schema_violation"
    assert "dataset_size" in status.last_error.message
