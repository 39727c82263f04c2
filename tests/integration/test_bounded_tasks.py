"""A bad task hurts only itself: memory and CPU are bounded, on the real emulators.

The attack that broke the first release: one 58-byte request took a 1 GiB worker down five
executions in a row, and the three innocent tasks beside it went to the DLQ with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from background_worker.worker import drain_subscription
from taskcore.status import TaskState
from taskcore.tasks import load_task_modules
from tests.integration.helpers import (
    publish_tasks,
    pull_all,
    settings_env,
    status_of,
    upload,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("example_tasks", "tests.task_modules.misbehaving")


@pytest.fixture
def misbehaving(pipeline):
    """Settings whose workers also load the misbehaving task types."""
    return pipeline.replace(task_modules=MODULES)


def test_an_isolated_task_past_its_memory_budget_dies_as_resource_exhausted(misbehaving):
    (task_id,) = publish_tasks(misbehaving, [("isolated_memory_hog", {"megabytes": 1024})])
    summary = drain_subscription(misbehaving.replace(idle_timeout_seconds=4))

    assert summary.outcomes["dead_lettered"] == 1 and summary.outcomes["retried"] == 4
    status = status_of(misbehaving, task_id)
    assert status.state == TaskState.DEAD_LETTERED and status.failures == 5
    assert {e.type for e in status.errors} == {"resource_exhausted"}
    (dead,) = pull_all(misbehaving, misbehaving.dlq_subscription_path)
    assert dead.message.attributes["error_type"] == "resource_exhausted"


def test_an_isolated_run_whose_process_dies_fails_as_crashed_at_once(misbehaving):
    (task_id,) = publish_tasks(misbehaving, [("isolated_crasher", {})])
    started = time.monotonic()
    summary = drain_subscription(misbehaving.replace(max_messages=1))

    assert time.monotonic() - started < 15, "seen dead at once, not at its 60 s time limit"
    assert summary.outcomes["retried"] == 1
    error = status_of(misbehaving, task_id).last_error
    assert (error.type, error.message) == (
        "crashed",
        "its process ended with exit code 3 and no result",
    )


def test_cpu_bound_work_that_never_checks_its_deadline_is_killed_at_its_time_limit(misbehaving):
    (task_id,) = publish_tasks(misbehaving, [("cpu_spinner", {"seconds": 60})])
    started = time.monotonic()
    summary = drain_subscription(misbehaving.replace(max_messages=1))

    assert time.monotonic() - started < 15, "killed at the 2 s limit, not after 60 s of spinning"
    assert summary.outcomes["retried"] == 1
    status = status_of(misbehaving, task_id)
    assert status.last_error.type == "timeout" and "killed" in status.last_error.message


def test_no_more_tasks_run_at_once_than_the_memory_budget_holds(misbehaving):
    upload(misbehaving, "in.txt", b"x\n")
    publish_tasks(
        misbehaving, [("file_processing", {"filename": "in.txt", "processing_time": 1})] * 6
    )
    registry = load_task_modules(MODULES)
    real = registry.get("file_processing").handler
    lock, active = threading.Lock(), Counter()

    def watched(ctx, payload):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            real(ctx, payload)
        finally:
            with lock:
                active["now"] -= 1

    # Room for two 64 MiB tasks above what the process already holds (90% is usable).
    from background_worker.memory import MIB, resident_bytes

    budget_mb = int((resident_bytes() / MIB + 2 * 64 + 10) / 0.9)
    summary = drain_subscription(
        misbehaving.replace(
            worker_memory_mb=budget_mb, worker_concurrency=8, max_processing_time_seconds=1
        ),
        task_types=registry.with_handlers(file_processing=watched),
    )

    assert summary.outcomes["succeeded"] == 6
    assert active["max"] == 2, "eight threads, but memory for two tasks"


def _memory_control():
    try:
        from chaos.memory import memory_control

        return memory_control("cgroup")
    except Exception as exc:  # no writable memory cgroup here
        pytest.skip(f"needs a writable memory cgroup (root): {exc}")


def run_execution_with_memory(settings, control, limit_bytes: int, name: str):
    """One `taskctl worker` execution in its own memory cgroup; its exit code."""
    box = control.prepare(name)
    env = {**os.environ, **settings_env(settings), "CLOUD_RUN_EXECUTION": name}
    argv = control.command(box, [sys.executable, "-m", "taskctl", "worker"])
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        control.attach(box, proc.pid)
        control.set_limit(box, limit_bytes)
        return proc.wait(timeout=120), control.oom_killed(box)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        control.release(box)


def test_a_task_that_kills_a_1_gib_execution_dies_alone_and_the_tasks_beside_it_succeed(
    misbehaving,
):
    control = _memory_control()
    upload(misbehaving, "in.txt", b"innocent\n")
    settings = misbehaving.replace(
        max_processing_time_seconds=3, idle_timeout_seconds=3, worker_concurrency=8
    )
    (hog,) = publish_tasks(settings, [("memory_hog", {"megabytes": 1536})])
    bystanders = publish_tasks(
        settings, [("file_processing", {"filename": "in.txt", "processing_time": 3})] * 3
    )
    executions = []
    try:
        for number in range(8):
            code, oom = run_execution_with_memory(
                settings, control, 1024 * 1024**2, f"gib-{number}"
            )
            executions.append((code, oom))
            records = [status_of(settings, t) for t in [hog, *bystanders]]
            if all(r is not None and r.state in ("succeeded", "dead_lettered") for r in records):
                break
            time.sleep(1)
    finally:
        control.close()

    code, oom = executions[0]
    assert oom and code != 0, "the first execution ran the hog on its threads and was OOM-killed"
    assert all(code == 0 for code, _ in executions[1:]), (
        f"isolated, it never took an execution down again: {executions}"
    )
    for task_id in bystanders:
        status = status_of(settings, task_id)
        assert status.state == TaskState.SUCCEEDED, (task_id, status)
    status = status_of(settings, hog)
    assert status.state == TaskState.DEAD_LETTERED
    assert status.last_error.type == "resource_exhausted"
    dead = pull_all(settings, settings.dlq_subscription_path)
    assert [m.message.attributes["task_id"] for m in dead] == [hog]
