"""Outages of the backing services: wait them out, never ack without output, exit 2 past retries."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from background_worker.execution import ExitCode
from background_worker.worker import drain_subscription
from devstack.emulators import free_port, start_gcs_emulator
from taskcore.bootstrap import bootstrap
from tests.integration.helpers import publish_tasks, pull_all, settings_env, status_of, upload
from tests.integration.test_fault_injection import assert_accounted

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_SECONDS = 20


def test_gcs_down_for_20s_mid_drain_acks_nothing_without_output_and_processes_all(
    settings, tmp_path, monkeypatch
):
    port = free_port()
    data_dir = str(tmp_path / "gcs")
    gcs = start_gcs_emulator(port=port, data_dir=data_dir)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.env_value)
        # The production claim (60 s): the tests' 5 s claim would have the fence stop the runs
        # that claimed their task before the outage (see test_claim_fence), and run them again.
        settings = settings.replace(
            worker_concurrency=4, storage_emulator_host=gcs.env_value, claim_seconds=60
        )
        bootstrap(settings)
        upload(settings, "in.txt", b"survives outages\n")
        task_ids = publish_tasks(
            settings, [("file_processing", {"filename": "in.txt", "processing_time": 0.3})] * 30
        )
        summaries = []
        drain = threading.Thread(target=lambda: summaries.append(drain_subscription(settings)))
        drain.start()
        time.sleep(0.8)  # let the drain get going: the outage must hit it mid-flight
        gcs.stop()
        outage_started = time.monotonic()
        drain.join(OUTAGE_SECONDS)
        assert drain.is_alive(), "the worker must wait the outage out, not exit"
        gcs = start_gcs_emulator(port=port, data_dir=data_dir)
        outage = time.monotonic() - outage_started
        drain.join(120)
        assert not drain.is_alive()
        (summary,) = summaries
        assert outage >= OUTAGE_SECONDS
        assert summary.outcomes["succeeded"] == 30
        assert summary.outcomes["dead_lettered"] == 0 and summary.outcomes["retried"] == 0
        assert_accounted(settings, task_ids)
        assert pull_all(settings, settings.subscription_path, wait=1) == []
    finally:
        gcs.stop()


def _run_worker(settings, **env_overrides):
    env = {**os.environ, **settings_env(settings), **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "taskctl", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )


def test_worker_exits_2_when_pubsub_is_unreachable(settings):
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _run_worker(settings, PUBSUB_EMULATOR_HOST=dead, INFRA_RETRY_SECONDS="2")
    assert result.returncode == ExitCode.INFRASTRUCTURE_UNAVAILABLE == 2
    assert time.monotonic() - started < 30
    assert b"execution_failed" in result.stdout


def test_worker_exits_2_when_gcs_stays_unreachable_and_returns_the_message(pipeline):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    dead = f"http://127.0.0.1:{free_port()}"
    result = _run_worker(pipeline, STORAGE_EMULATOR_HOST=dead, INFRA_RETRY_SECONDS="2")
    assert result.returncode == 2, result.stdout[-2000:]
    # Nacked, not lost and not dead-lettered: the next execution processes it.
    summary = drain_subscription(pipeline)
    assert summary.outcomes["succeeded"] == 1
    assert status_of(pipeline, task_id).state == "succeeded"


def test_worker_exits_0_even_when_tasks_fail(pipeline):
    publish_tasks(pipeline, [("file_processing", {"filename": "missing.txt"})])
    result = _run_worker(pipeline)
    assert result.returncode == ExitCode.OK
    assert b'"dead_lettered":1' in result.stdout
