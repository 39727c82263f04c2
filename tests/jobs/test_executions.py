"""Executions through the real google-cloud-run clients: RunJob with overrides starts tasks
with Cloud Run's environment; GetExecution and ListExecutions report them as Cloud Run does;
parallelism and retries are honoured."""

from __future__ import annotations

import sys
import time

import pytest
from google.api_core import exceptions

from tests.jobs.standin_helpers import (
    FAKE_TASK,
    CompletionStatus,
    Reason,
    State,
    condition,
    create_job,
    execution_id,
    execution_log,
    fake_job,
    records,
    run,
    wait_for,
    wait_until_done,
)


def test_run_with_overrides_starts_each_task_with_cloud_run_env_over_job_env(
    run_clients, parent, record_dir
):
    job = create_job(
        run_clients,
        parent,
        "overridden",
        fake_job(
            record_dir,
            "--exit",
            "9",
            env={"LAYERED": "job", "JOB_ONLY": "kept"},
            labels={"queue": "default"},
        ),
    )
    args = ["--record-dir", str(record_dir), "--sleep", "0"]

    started = run(
        run_clients,
        job.name,
        task_count=3,
        container_overrides=[{"args": args, "env": [{"name": "LAYERED", "value": "override"}]}],
    )
    done = wait_until_done(run_clients, started.name)

    assert started.name.startswith(f"{job.name}/executions/overridden-")
    assert len(execution_id(started.name)) == len("overridden-") + 5
    assert (done.job, done.task_count, done.succeeded_count, done.failed_count) == (
        "overridden",
        3,
        3,
        0,
    )
    assert done.labels == {"queue": "default"}
    assert list(done.template.containers[0].args) == args
    seen = records(record_dir, started.name)
    assert sorted(seen) == [(0, 0), (1, 0), (2, 0)]
    for (index, _), record in seen.items():
        env = record["env"]
        assert env["CLOUD_RUN_JOB"] == "overridden"
        assert env["CLOUD_RUN_EXECUTION"] == execution_id(started.name)
        assert env["CLOUD_RUN_TASK_INDEX"] == str(index)
        assert env["CLOUD_RUN_TASK_COUNT"] == "3"
        assert env["CLOUD_RUN_TASK_ATTEMPT"] == "0"
        assert env["STANDIN_MARK"] == "from-the-stand-in"  # the stand-in's own environment
        assert (env["LAYERED"], env["JOB_ONLY"]) == ("override", "kept")
        assert env["PYTHONUNBUFFERED"] == "1"  # the worker image's ENV
        assert record["argv"] == args  # the override replaced the job's args
        assert record["pgid"] == record["pid"]  # each task leads a process group of its own


def test_execution_reports_its_tasks_while_they_run_and_after(run_clients, parent, record_dir):
    job = create_job(
        run_clients, parent, "observed", fake_job(record_dir, "--sleep", "1.5", task_count=2)
    )

    started = run(run_clients, job.name)
    running = wait_for(
        lambda: (
            (e := run_clients.executions.get_execution(name=started.name)).running_count == 2 and e
        ),
        what="two running tasks",
    )
    done = wait_until_done(run_clients, started.name)

    assert not running.completion_time and running.start_time and running.reconciling
    assert condition(running, "Started").state == State.CONDITION_SUCCEEDED
    assert condition(running, "Completed").state == State.CONDITION_RECONCILING
    assert done.completion_time >= done.start_time >= done.create_time
    assert (done.running_count, done.succeeded_count, done.retried_count) == (0, 2, 0)
    assert not done.reconciling
    completed = condition(done, "Completed")
    assert completed.state == State.CONDITION_SUCCEEDED
    assert completed.message.startswith("Execution completed successfully in ")
    assert condition(done, "ResourcesAvailable").state == State.CONDITION_SUCCEEDED
    log = execution_log(done)
    assert "[task 0 attempt 0] task 0 attempt 0 says hello" in log
    assert "[task 1 attempt 0] task 1 attempt 0 says hello" in log
    job_now = run_clients.jobs.get_job(name=job.name)
    assert job_now.execution_count == 1
    assert job_now.latest_created_execution.name == started.name
    assert (
        job_now.latest_created_execution.completion_status == CompletionStatus.EXECUTION_SUCCEEDED
    )


def test_executions_are_listed_newest_first_a_page_at_a_time(run_clients, parent, record_dir):
    job = create_job(run_clients, parent, "listed", fake_job(record_dir))
    other = create_job(run_clients, parent, "other", fake_job(record_dir))
    names = [run(run_clients, job.name).name for _ in range(3)]
    other_name = run(run_clients, other.name).name

    pages = list(
        run_clients.executions.list_executions(request={"parent": job.name, "page_size": 2}).pages
    )
    everywhere = [e.name for e in run_clients.executions.list_executions(parent=f"{parent}/jobs/-")]

    assert [[e.name for e in page.executions] for page in pages] == [
        names[::-1][:2],
        names[::-1][2:],
    ]
    assert everywhere == [other_name, *names[::-1]]
    for name in [*names, other_name]:
        wait_until_done(run_clients, name)


def test_parallelism_caps_the_running_tasks_and_every_task_runs_once(
    run_clients, parent, record_dir
):
    job = create_job(
        run_clients,
        parent,
        "capped",
        fake_job(record_dir, "--sleep", "0.4", task_count=5, parallelism=2),
    )

    started = run(run_clients, job.name)
    counts = []
    while not (e := run_clients.executions.get_execution(name=started.name)).completion_time:
        counts.append(e.running_count)
        time.sleep(0.02)
    done = e

    assert done.parallelism == 2 and done.succeeded_count == 5
    assert max(counts) == 2, "never more than two at once, and two at once at some point"
    seen = records(record_dir, started.name)
    assert sorted(seen) == [(i, 0) for i in range(5)]
    spans = [(r["started"], r["ended"]) for r in seen.values()]
    assert max(sum(s <= start < e for s, e in spans) for start, _ in spans) <= 2


def test_a_failing_task_is_retried_until_it_succeeds_within_max_retries(
    run_clients, parent, record_dir
):
    job = create_job(
        run_clients, parent, "flaky", fake_job(record_dir, "--fail-attempts", "2", max_retries=3)
    )

    done = wait_until_done(run_clients, run(run_clients, job.name).name)

    seen = records(record_dir, done.name)
    assert sorted(seen) == [(0, 0), (0, 1), (0, 2)]
    assert [seen[0, a]["env"]["CLOUD_RUN_TASK_ATTEMPT"] for a in range(3)] == ["0", "1", "2"]
    assert (done.succeeded_count, done.failed_count, done.retried_count) == (1, 0, 1)
    assert condition(done, "Completed").state == State.CONDITION_SUCCEEDED


def test_a_task_failing_past_max_retries_fails_the_execution_with_its_reason(
    run_clients, parent, record_dir
):
    job = create_job(
        run_clients,
        parent,
        "broken",
        fake_job(record_dir, "--fail-index", "1", task_count=2, max_retries=1),
    )

    operation = run_clients.jobs.run_job(name=job.name)
    done = wait_until_done(run_clients, operation.metadata.name)

    assert sorted(records(record_dir, done.name)) == [(0, 0), (1, 0), (1, 1)]
    assert (done.succeeded_count, done.failed_count, done.retried_count) == (1, 1, 1)
    completed = condition(done, "Completed")
    assert completed.state == State.CONDITION_FAILED
    assert completed.execution_reason == Reason.NON_ZERO_EXIT_CODE
    assert f"{execution_id(done.name)}-task1" in completed.message
    assert "exit code 1" in completed.message
    with pytest.raises(exceptions.GoogleAPICallError, match="task1"):
        operation.result(timeout=10)
    latest = run_clients.jobs.get_job(name=job.name).latest_created_execution
    assert latest.completion_status == CompletionStatus.EXECUTION_FAILED


def test_run_job_operation_is_done_when_the_execution_is_with_the_final_execution(
    run_clients, parent, record_dir
):
    job = create_job(run_clients, parent, "awaited", fake_job(record_dir, "--sleep", "0.3"))

    operation = run_clients.jobs.run_job(name=job.name)
    first = run_clients.operations.get_operation(operation.operation.name)
    result = operation.result(timeout=20)
    last = run_clients.operations.get_operation(operation.operation.name)

    assert not first.done and last.done
    assert result.name == operation.metadata.name and result.succeeded_count == 1
    assert result.completion_time


def test_a_command_that_cannot_start_fails_its_task_after_its_retries(
    run_clients, parent, record_dir
):
    job = fake_job(record_dir, max_retries=1)
    job.template.template.containers[0].command = [str(FAKE_TASK.with_name("absent-binary"))]
    job = create_job(run_clients, parent, "unstartable", job)

    done = wait_until_done(run_clients, run(run_clients, job.name).name)

    assert (done.failed_count, done.retried_count) == (1, 1)
    assert "could not start" in condition(done, "Completed").message


@pytest.mark.parametrize(
    "overrides",
    [
        {"task_count": -1},
        {"task_count": 10_001},
        {"timeout": {"seconds": -5}},
        {"container_overrides": [{"name": "not-the-container"}]},
        {"container_overrides": [{"args": ["x"]}, {"args": ["y"]}]},
        {"container_overrides": [{"args": ["x"], "clear_args": True}]},
        {"container_overrides": [{"env": [{"name": "CLOUD_RUN_EXECUTION", "value": "mine"}]}]},
    ],
)
def test_bad_overrides_are_invalid_argument_and_start_nothing(
    run_clients, parent, record_dir, overrides
):
    job = create_job(run_clients, parent, "guarded", fake_job(record_dir))

    with pytest.raises(exceptions.InvalidArgument):
        run_clients.jobs.run_job(request={"name": job.name, "overrides": overrides})

    assert list(run_clients.executions.list_executions(parent=job.name)) == []
    assert run_clients.jobs.get_job(name=job.name).execution_count == 0


def test_the_default_command_is_the_worker_images_taskctl_worker():
    from devstack.jobs.image import task_argv

    assert task_argv([], []) == [sys.executable, "-m", "taskctl", "worker"]
    assert task_argv([], ["taskctl", "worker", "--once"]) == [
        sys.executable,
        "-m",
        "taskctl",
        "worker",
        "--once",
    ]
    assert task_argv(["python3", "-c"], ["pass"]) == [sys.executable, "-c", "pass"]
    assert task_argv(["/bin/true"], []) == ["/bin/true"]
