"""Cancelling a task: before it runs it never runs; while it runs it stops and says so."""

from __future__ import annotations

import threading
import time

import pytest

from background_worker.worker import Worker, drain_subscription
from taskcore import lifecycle
from taskcore.lifecycle import Delivery
from taskcore.status import TaskState, utcnow
from tests.integration.dlq_helpers import status_store
from tests.integration.helpers import publish_tasks, pull_all, status_of, upload
from tests.integration.test_fault_injection import wait_for
from tests.registries import builtin_registry

pytestmark = pytest.mark.integration


def cancel(settings, task_id):
    return status_store(settings).transition(task_id, lifecycle.request_cancel(utcnow()))


def test_a_queued_task_cancelled_is_acked_without_running(pipeline):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    delivery = Delivery(task_id=task_id, task_type="data_transformation", message_id="m")
    status_store(pipeline).create(lifecycle.queued(delivery, utcnow()))
    assert cancel(pipeline, task_id).record.state == TaskState.CANCELLED

    ran = []
    registry = builtin_registry().with_handlers(data_transformation=lambda ctx, p: ran.append(1))
    summary = drain_subscription(pipeline, task_types=registry)

    assert summary.outcomes["cancelled"] == 1 and ran == []
    assert status_of(pipeline, task_id).state == TaskState.CANCELLED
    assert pull_all(pipeline, pipeline.subscription_path, wait=1) == [], "acked"


def test_a_running_task_stops_at_its_next_check_and_ends_cancelled(pipeline):
    upload(pipeline, "long.txt", b"long\n")
    (task_id,) = publish_tasks(
        pipeline, [("file_processing", {"filename": "long.txt", "processing_time": 25})]
    )
    worker = Worker(pipeline.replace(max_processing_time_seconds=30))
    results = []
    thread = threading.Thread(target=lambda: results.append(worker.run()), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: (s := status_of(pipeline, task_id)) is not None and s.state == "running",
            20,
            "the task to run",
        )
        asked = cancel(pipeline, task_id)
        assert asked.written and asked.record.cancel_requested_at is not None
        asked_at = time.monotonic()
        wait_for(lambda: status_of(pipeline, task_id).state == "cancelled", 15, "the cancellation")
        stopped_after = time.monotonic() - asked_at
        thread.join(30)
    finally:
        worker.shutdown.set()
        thread.join(30)
        worker.close()

    assert stopped_after < 5, "noticed within the cancel poll, not at the end of the 25 s task"
    assert results[0].outcomes["cancelled"] == 1
    status = status_of(pipeline, task_id)
    assert status.outputs == [] and status.run is None
    assert pull_all(pipeline, pipeline.subscription_path, wait=1) == []


def test_a_finished_task_cannot_be_cancelled(pipeline):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    drain_subscription(pipeline)

    refused = cancel(pipeline, task_id)

    assert refused.refused and refused.refusal.reason == "finished"
    assert status_of(pipeline, task_id).state == TaskState.SUCCEEDED
