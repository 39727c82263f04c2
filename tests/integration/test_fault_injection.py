"""Fault injection on the real emulators: at-least-once delivery, exactly-once effects.

Each test ends with the same accounting: every accepted task either succeeded or was
dead-lettered, none was lost, and no task_id has more than one output set.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from background_worker.worker import drain_subscription
from taskcore.errors import PublishError, TransientTaskError
from taskcore.publishing import Publisher
from tests.integration.helpers import (
    output_generations,
    outputs_of,
    publish_raw,
    publish_tasks,
    pull_all,
    settings_env,
    status_of,
    upload,
)
from tests.registries import builtin_registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Long enough for a killed worker's lease (10 s ack deadline) to lapse and the message return.
REDELIVERY_IDLE = 14.0


def assert_accounted(settings, task_ids, dead_lettered=()):
    """accepted = succeeded ∪ dead-lettered, nothing lost, one run's output set per task."""
    for task_id in task_ids:
        status = status_of(settings, task_id)
        assert status is not None, f"{task_id} lost: no status"
        expected = "dead_lettered" if task_id in dead_lettered else "succeeded"
        assert status.state == expected, (task_id, status)
        if expected == "succeeded":
            outputs = outputs_of(settings, task_id)  # each named object at its generation
            assert outputs, f"{task_id} succeeded without outputs"
            runs = {ref.uri.rsplit("/", 2)[-2] for ref in status.outputs}
            assert len(runs) == 1, f"{task_id} names outputs of several runs: {runs}"


def start_fault_worker(settings, scenario, tmp_path):
    signal_file = tmp_path / f"{scenario}.reached"
    env = {
        **os.environ,
        **settings_env(settings),
        "FAULT_SCENARIO": scenario,
        "FAULT_SIGNAL_FILE": str(signal_file),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.fault_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc, signal_file


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill(proc, sig=signal.SIGKILL):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=15)


def test_sigkill_mid_task_before_output_write_is_redelivered_and_processed_once(pipeline, tmp_path):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 10})])
    proc, reached = start_fault_worker(pipeline, "hang_before_write", tmp_path)
    try:
        wait_for(reached.exists, 30, "the worker to start the task")
        wait_for(
            lambda: (s := status_of(pipeline, task_id)) is not None and s.state == "running",
            10,
            "the running status record",
        )
        kill(proc)
        assert outputs_of(pipeline, task_id) == {}
        assert status_of(pipeline, task_id).state == "running"

        summary = drain_subscription(pipeline.replace(idle_timeout_seconds=REDELIVERY_IDLE))
    finally:
        kill(proc)
    assert summary.outcomes["succeeded"] == 1
    assert status_of(pipeline, task_id).attempts == 2
    assert list(outputs_of(pipeline, task_id)) == ["results.json"]
    assert_accounted(pipeline, [task_id])


def test_sigkill_after_output_write_before_ack_is_seen_as_done_without_second_output(
    pipeline, tmp_path
):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 10})])
    proc, reached = start_fault_worker(pipeline, "hang_before_ack", tmp_path)
    try:
        wait_for(reached.exists, 30, "the worker to reach the ack")
        kill(proc)
        generations = output_generations(pipeline, task_id)
        assert generations and status_of(pipeline, task_id).state == "succeeded"

        summary = drain_subscription(pipeline.replace(idle_timeout_seconds=REDELIVERY_IDLE))
    finally:
        kill(proc)
    assert summary.received == 1
    assert summary.outcomes["duplicate"] == 1 and summary.outcomes["succeeded"] == 0
    assert output_generations(pipeline, task_id) == generations
    assert pull_all(pipeline, pipeline.subscription_path, wait=1) == []
    assert_accounted(pipeline, [task_id])


def test_sigterm_during_drain_exits_promptly_finishing_or_returning_in_flight_work(pipeline):
    upload(pipeline, "in.txt", b"some text\n")
    quick = publish_tasks(
        pipeline, [("file_processing", {"filename": "in.txt", "processing_time": 1})] * 4
    )
    slow = publish_tasks(
        pipeline, [("file_processing", {"filename": "in.txt", "processing_time": 25})] * 3
    )
    env = {
        **os.environ,
        **settings_env(
            pipeline.replace(
                max_processing_time_seconds=30, shutdown_grace_seconds=3, worker_concurrency=10
            )
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskctl", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: all(
                (s := status_of(pipeline, t)) is not None and s.state == "running" for t in slow
            ),
            30,
            "the slow tasks to start",
        )
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        exited_after = time.monotonic() - sent
        log_lines = [
            json.loads(line)
            for line in proc.stdout.read().decode().splitlines()
            if line.startswith("{")
        ]
    finally:
        kill(proc)
    assert code == 0
    assert exited_after < 10
    summary_line = next(line for line in log_lines if line.get("event") == "execution_summary")
    assert summary_line["stop_reason"] == "shutdown"
    # The slow ones were stopped at the end of the grace period and returned by their runs.
    assert summary_line["processed"] == 4 and summary_line["released"] == 3
    assert summary_line["abandoned"] == 0
    for task_id in quick:
        assert status_of(pipeline, task_id).state == "succeeded"
    # Nacked, not left to lease expiry: they come back well within the 10 s ack deadline.
    started = time.monotonic()
    summary = drain_subscription(
        pipeline.replace(idle_timeout_seconds=3, max_processing_time_seconds=0.2)
    )
    assert summary.outcomes["succeeded"] == 3
    assert time.monotonic() - started < 10
    assert_accounted(pipeline, quick + slow)


def test_task_running_three_times_the_ack_deadline_is_delivered_once(pipeline):
    calls = []
    registry = builtin_registry()
    real = registry.get("file_processing").handler

    def counting(ctx, payload):
        calls.append(ctx.delivery_attempt)
        real(ctx, payload)

    registry = registry.with_handlers(file_processing=counting)
    upload(pipeline, "long.txt", b"long\n")
    (task_id,) = publish_tasks(
        pipeline, [("file_processing", {"filename": "long.txt", "processing_time": 30})]
    )
    summary = drain_subscription(
        pipeline.replace(max_processing_time_seconds=30), task_types=registry
    )

    assert pipeline.ack_deadline_seconds * 3 <= 30
    assert calls == [1]
    assert summary.received == 1 and summary.outcomes["succeeded"] == 1
    assert status_of(pipeline, task_id).attempts == 1
    assert_accounted(pipeline, [task_id])


def test_two_concurrent_executions_share_the_work_without_duplicate_outputs(pipeline):
    task_ids = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 20})] * 150)
    summaries = []

    def run():
        summaries.append(drain_subscription(pipeline.replace(worker_concurrency=6)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(summaries) == 2
    assert sum(s.outcomes["succeeded"] for s in summaries) == 150
    assert all(s.received > 0 for s in summaries), "both executions took work"
    for task_id in task_ids:
        assert list(output_generations(pipeline, task_id)) == ["results.json"]
    assert_accounted(pipeline, task_ids)


POISON = {
    "invalid_json": b"{not json",
    "not_an_object": b"[1, 2, 3]",
    "missing_task_type": b'{"payload": {"filename": "a.txt"}}',
    "unknown_task_type": b'{"task_type": "teleport", "payload": {}}',
    "schema_violation": b'{"task_type": "data_transformation", "payload": {"dataset_size": -5}}',
    "invalid_utf8": b'{"task_type": "\xff\xfe"}',
    "message_too_large": b'{"task_type": "data_transformation", "pad": "'
    + b"x" * 9_000_000
    + b'"}',
}


def test_poison_bodies_are_dead_lettered_once_with_their_error_type(pipeline):
    for body in POISON.values():
        publish_raw(pipeline, body)
    good = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})] * 3)
    summary = drain_subscription(pipeline)

    assert summary.outcomes["dead_lettered"] == len(POISON)
    assert summary.outcomes["succeeded"] == 3
    dead = pull_all(pipeline, pipeline.dlq_subscription_path)
    assert sorted(m.message.attributes["error_type"] for m in dead) == sorted(POISON)
    by_type = {m.message.attributes["error_type"]: m.message for m in dead}
    for error_type, body in POISON.items():
        assert by_type[error_type].data == body, "the original body travels with the dead letter"
        assert by_type[error_type].attributes["error_message"]
    assert_accounted(pipeline, good)


def test_transient_error_twice_then_success_records_the_attempts(pipeline):
    registry = builtin_registry()
    real = registry.get("data_transformation").handler

    def flaky(ctx, payload):
        if ctx.delivery_attempt < 3:
            raise TransientTaskError(f"upstream busy (attempt {ctx.delivery_attempt})")
        real(ctx, payload)

    registry = registry.with_handlers(data_transformation=flaky)
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    summary = drain_subscription(pipeline.replace(idle_timeout_seconds=6), task_types=registry)

    assert summary.outcomes["retried"] == 2 and summary.outcomes["succeeded"] == 1
    status = status_of(pipeline, task_id)
    assert status.attempts == 3
    assert status.failures == 2 and status.last_error is None, "succeeded: no current error"
    assert [e.message for e in status.errors] == [
        "upstream busy (attempt 1)",
        "upstream busy (attempt 2)",
    ]
    assert_accounted(pipeline, [task_id])


class FailingDeadLetterPublisher(Publisher):
    """Publishes tasks normally but cannot reach the DLQ topic."""

    def publish(self, topic_path, data, attributes):
        if topic_path == self.settings.dlq_topic_path:
            raise PublishError("DLQ topic unreachable (injected)")
        return super().publish(topic_path, data, attributes)


def test_failed_dead_letter_publish_leaves_the_message_unacked_and_not_lost(pipeline):
    publish_raw(pipeline, b"{broken")
    failing = FailingDeadLetterPublisher(pipeline)
    summary = drain_subscription(pipeline.replace(max_messages=1), publisher=failing)
    assert summary.outcomes["released"] == 1 and summary.outcomes["dead_lettered"] == 0
    assert pull_all(pipeline, pipeline.dlq_subscription_path, wait=1) == []

    summary = drain_subscription(pipeline.replace(idle_timeout_seconds=6))
    assert summary.outcomes["dead_lettered"] == 1
    (dead,) = pull_all(pipeline, pipeline.dlq_subscription_path)
    assert dead.message.attributes["error_type"] == "invalid_json"
    assert dead.message.data == b"{broken"
