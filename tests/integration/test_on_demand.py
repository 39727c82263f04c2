"""Executions on demand, end to end: the real API's dispatcher starts `taskctl worker` tasks in
the Cloud Run Jobs stand-in when tasks arrive, and nothing runs once the queue is empty."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from devstack.emulators import start_jobs_standin
from devstack.local_jobs import Ticker, define_worker_jobs
from dispatcher.jobs import JobsGateway
from taskcore.clients import subscriber_client
from taskcore.status import TaskState
from tests.integration.api_process import running_api
from tests.integration.helpers import publish_tasks, settings_env, status_of
from tests.registries import builtin_registry

pytestmark = pytest.mark.integration

WORK = {"task_type": "data_transformation", "dataset_size": 5, "transformation": "normalize"}


@pytest.fixture
def on_demand(pipeline, tmp_path):
    """The API with its dispatcher on, and a stand-in holding the default queue's job."""
    settings = pipeline.replace(
        dispatch_enabled=True,
        worker_job_name=f"worker-{uuid.uuid4().hex[:8]}",
        idle_timeout_seconds=1.0,
        api_workers=1,
        api_threads=8,
    )
    standin = start_jobs_standin(
        log_path=str(tmp_path / "standin.log"),
        work_dir=str(tmp_path / "jobs"),
        term_grace=1.0,
        env=settings_env(settings),
    )
    try:
        settings = settings.replace(cloud_run_emulator_host=standin.env_value)
        define_worker_jobs(standin.env_value, settings, builtin_registry())
        with running_api(settings, tmp_path) as api:
            yield settings, api
    finally:
        standin.stop()


def _executions(settings):
    gateway = JobsGateway(settings)
    try:
        return gateway.executions(settings.worker_job_name)
    finally:
        gateway.close()


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout:g}s"
        time.sleep(0.1)


def test_a_task_submitted_while_idle_starts_an_execution_and_runs_within_seconds(on_demand):
    settings, api = on_demand
    assert _executions(settings) == []  # idle: nothing runs, nothing ran
    started = time.monotonic()
    task_id = requests.post(f"{api.url}/submit-task", json=WORK, timeout=10).json()["task_id"]
    _until(
        lambda: status_of(settings, task_id).state == TaskState.SUCCEEDED,
        30,
        "the task succeeded",
    )
    latency = time.monotonic() - started
    (execution,) = _executions(settings)
    assert execution.created is not None
    # Idle again: the execution exits once the queue stays empty (IDLE_TIMEOUT_SECONDS).
    _until(
        lambda: all(e.running_tasks == 0 for e in _executions(settings)),
        15,
        "the execution ended",
    )
    assert latency < 15, latency


def test_a_burst_starts_a_bounded_number_of_executions_and_every_task_runs(on_demand):
    settings, api = on_demand
    session = requests.Session()
    ids = []
    for _ in range(6):
        body = {"tasks": [WORK] * 50}
        answer = session.post(f"{api.url}/submit-tasks", json=body, timeout=30)
        assert answer.status_code == 202, answer.text
        ids += [r["task_id"] for r in answer.json()["results"]]
    _until(
        lambda: all(status_of(settings, t).state == TaskState.SUCCEEDED for t in ids),
        90,
        "all 300 tasks succeeded",
    )
    executions = _executions(settings)
    # One decision per cooldown at most; the default policy allows 10 parallel tasks.
    assert 1 <= len(executions) <= 6, executions
    _until(
        lambda: all(e.running_tasks == 0 for e in _executions(settings)),
        20,
        "every execution ended",
    )


def test_a_delayed_task_runs_once_due_through_the_tick(on_demand):
    settings, api = on_demand
    answer = requests.post(f"{api.url}/submit-task", json={**WORK, "delay_seconds": 2}, timeout=10)
    task_id = answer.json()["task_id"]
    ticker = Ticker(f"{api.url}/internal/tick", interval=0.25).start()
    try:
        assert status_of(settings, task_id).state == TaskState.SCHEDULED
        assert _executions(settings) == []  # nothing starts for a task not yet due
        _until(
            lambda: status_of(settings, task_id).state == TaskState.SUCCEEDED,
            30,
            "the delayed task ran",
        )
    finally:
        ticker.stop()
    record = status_of(settings, task_id)
    assert record.started_at >= record.run_at  # never early


def test_a_message_whose_pull_answer_was_lost_runs_once_its_lease_lapses(on_demand):
    """A pull answered by the server but never seen by its caller holds its messages for the
    ack deadline (10 s here), while the execution that ran the rest finds the queue empty and
    exits. Nothing new arrives; the recheck it left starts the one that runs the lost task."""
    settings, api = on_demand
    (lost,) = publish_tasks(settings, [("data_transformation", {"dataset_size": 2})])
    subscriber = subscriber_client(settings)
    try:
        taken = subscriber.pull(
            request={"subscription": settings.subscription_path, "max_messages": 1}, timeout=10
        ).received_messages
    finally:
        subscriber.close()
    assert [m.message.attributes["task_id"] for m in taken] == [lost]  # and never settled
    ticker = Ticker(f"{api.url}/internal/tick", interval=0.25).start()
    try:
        seen = requests.post(f"{api.url}/submit-task", json=WORK, timeout=10).json()["task_id"]
        _until(
            lambda: status_of(settings, seen).state == TaskState.SUCCEEDED,
            30,
            "the submitted task ran",
        )
        _until(
            lambda: (r := status_of(settings, lost)) is not None and r.state == TaskState.SUCCEEDED,
            settings.ack_deadline_seconds + 40,
            "the task whose pull was lost ran after its lease lapsed",
        )
    finally:
        ticker.stop()
    assert len(_executions(settings)) >= 2, "a second execution, started by the recheck"
