"""Delayed tasks, the tick and the worker's hints to the dispatcher, on the real emulators."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests
from click.testing import CliRunner

from background_worker.worker import drain_subscription
from dispatcher.service import Dispatcher
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.demand import DemandStore
from taskcore.errors import TransientTaskError
from taskcore.journal import FLUSH_SECONDS as JOURNAL_FLUSH_SECONDS
from taskcore.publishing import Publisher
from taskcore.schedule import SCHEDULED_PREFIX, ScheduleStore
from taskcore.status import TaskState, utcnow
from taskcore.tasks import load_task_modules
from taskctl.main import main as cli_main
from tests.integration.api_process import running_api
from tests.integration.helpers import publish_tasks, pull_all, status_of
from tests.registries import builtin_registry

pytestmark = pytest.mark.integration

WORK = {"task_type": "data_transformation", "dataset_size": 5, "transformation": "normalize"}


@pytest.fixture
def api(pipeline, tmp_path):
    settings = pipeline.replace(api_workers=1, api_threads=4, admin_api_keys=("admin-key",))
    with running_api(settings, tmp_path) as running:
        yield running.url


def _tick(settings, *, seconds_ahead: float = 0.0):
    publisher = Publisher(settings)
    try:
        dispatcher = Dispatcher(
            settings,
            builtin_registry(),
            make_bucket(settings, storage_client(settings)),
            publisher,
            None,
            clock=lambda: utcnow() + timedelta(seconds=seconds_ahead),
        )
        return dispatcher.tick()
    finally:
        publisher.close()


def test_a_delayed_task_waits_unpublished_then_runs_once_due(pipeline, api):
    answer = requests.post(f"{api}/submit-task", json={**WORK, "delay_seconds": 120}, timeout=10)
    assert answer.status_code == 202 and answer.json()["status"] == "scheduled"
    task_id = answer.json()["task_id"]
    assert status_of(pipeline, task_id).state == TaskState.SCHEDULED
    # Survives the API: a new process's tick sees it; not due yet, so nothing is published.
    assert _tick(pipeline).published == []
    assert pull_all(pipeline, pipeline.subscription_path, wait=1) == []

    assert _tick(pipeline, seconds_ahead=121).published == [task_id]
    assert _tick(pipeline, seconds_ahead=122).published == []  # once
    summary = drain_subscription(pipeline, task_types=builtin_registry())
    assert summary.outcomes["succeeded"] == 1
    assert status_of(pipeline, task_id).state == TaskState.SUCCEEDED


def test_taskctl_schedules_shows_and_cancels_a_task_and_lists_it(pipeline, api):
    env = {"TASK_API_URL": api}
    submitted = CliRunner().invoke(
        cli_main,
        ["tasks", "submit", "data_transformation", "dataset_size=3", "--delay", "600"],
        env=env,
    )
    assert submitted.exit_code == 0, submitted.output
    task_id = json.loads(submitted.output)["task_id"]
    shown = CliRunner().invoke(cli_main, ["tasks", "show", task_id], env=env)
    assert json.loads(shown.output)["state"] == "scheduled"
    cancelled = CliRunner().invoke(cli_main, ["tasks", "cancel", task_id], env=env)
    assert json.loads(cancelled.output)["state"] == "cancelled"
    # The list reads the transition journal, which each process flushes every 10 s.
    deadline = time.monotonic() + JOURNAL_FLUSH_SECONDS + 5
    while True:
        listed = CliRunner().invoke(
            cli_main,
            ["tasks", "list", "--state", "cancelled", "--json"],
            env={**env, "TASK_API_KEY": "admin-key"},
        )
        assert listed.exit_code == 0, listed.output
        if json.loads(listed.output) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [t["task_id"] for t in json.loads(listed.output)] == [task_id]
    assert _tick(pipeline, seconds_ahead=601).dropped == [task_id]
    assert pull_all(pipeline, pipeline.subscription_path, wait=1) == []
    waited = CliRunner().invoke(cli_main, ["tasks", "wait", task_id, "--timeout", "5"], env=env)
    assert waited.exit_code == 1  # ended, but not succeeded


def test_a_worker_that_sends_a_task_back_leaves_a_wakeup_for_when_it_is_due(pipeline):
    settings = pipeline.replace(
        dispatch_enabled=True, retry_min_backoff_seconds=30, retry_max_backoff_seconds=30
    )
    (task_id,) = publish_tasks(settings, [("data_transformation", {"dataset_size": 5})])

    def flaky(ctx, payload):
        raise TransientTaskError("downstream busy")

    registry = builtin_registry().with_handlers(data_transformation=flaky)
    before = utcnow()
    summary = drain_subscription(settings.replace(max_messages=1), task_types=registry)
    assert summary.outcomes["retried"] == 1
    due = [item.due for item in ScheduleStore(_bucket(settings)).due(before + timedelta(minutes=5))]
    assert len(due) == 1
    # The backoff is 30 s jittered down to 24 s at least; the wake-up is due no earlier.
    assert before + timedelta(seconds=24) <= due[0] <= utcnow() + timedelta(seconds=32)
    assert status_of(settings, task_id).state == TaskState.RETRYING


def test_a_worker_that_found_its_queue_empty_says_so(pipeline):
    before = utcnow()
    summary = drain_subscription(pipeline, task_types=builtin_registry())
    assert summary.stop_reason == "idle"
    drained = DemandStore(_bucket(pipeline)).drained_since("default")
    assert drained is not None and before <= drained <= utcnow()


def test_nothing_is_left_behind_when_dispatch_is_off(pipeline):
    """Without a dispatcher nobody reads wake-ups, so the worker writes none."""
    publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])

    def flaky(ctx, payload):
        raise TransientTaskError("downstream busy")

    registry = builtin_registry().with_handlers(data_transformation=flaky)
    drain_subscription(pipeline.replace(max_messages=1), task_types=registry)
    assert list(_bucket(pipeline).list_blobs(prefix=SCHEDULED_PREFIX)) == []


def _bucket(settings):
    return make_bucket(settings, storage_client(settings))


def test_a_firing_delivered_twice_is_one_task_that_runs_once(pipeline, tmp_path):
    modules = ("example_tasks", "tests.task_modules.nightly")
    settings = pipeline.replace(task_modules=modules, api_workers=1, api_threads=4)
    header = {"X-CloudScheduler-ScheduleTime": "2026-12-01T02:00:00Z"}
    with running_api(settings, tmp_path) as running:
        fired = [
            requests.post(f"{running.url}/internal/fire/nightly_report", headers=header, timeout=10)
            for _ in range(2)
        ]
    assert [f.status_code for f in fired] == [202, 202]
    task_ids = {f.json()["task_id"] for f in fired}
    assert task_ids == {"cron-nightly_report-20261201T020000Z"}
    registry = load_task_modules(modules)
    summary = drain_subscription(settings, task_types=registry)
    assert summary.outcomes["succeeded"] == 1 and summary.received == 1
    assert status_of(settings, task_ids.pop()).state == TaskState.SUCCEEDED
