"""Jobs through the real google-cloud-run clients: defined, read, listed, changed, deleted,
and refused with the status codes Cloud Run answers."""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.protobuf import duration_pb2

from tests.jobs.standin_helpers import (
    create_job,
    fake_job,
    process_gone,
    records,
    run,
    wait_for,
)


def test_created_job_gets_cloud_runs_defaults_and_reads_back_the_same(
    run_clients, parent, record_dir
):
    created = create_job(
        run_clients, parent, "defaults", fake_job(record_dir, max_retries=None, labels={"q": "a"})
    )

    assert created.name == f"{parent}/jobs/defaults"
    assert created.uid and created.etag and created.generation == 1
    assert created.create_time and created.update_time
    assert created.template.task_count == 1
    assert created.template.template.max_retries == 3
    assert created.template.template.timeout.total_seconds() == 600
    assert created.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert created.execution_count == 0 and not created.reconciling
    assert run_clients.jobs.get_job(name=created.name) == created


def test_jobs_are_listed_by_name_a_page_at_a_time(run_clients, parent, record_dir):
    for job_id in ("queue-c", "queue-a", "queue-b"):
        create_job(run_clients, parent, job_id, fake_job(record_dir))

    pager = run_clients.jobs.list_jobs(request={"parent": parent, "page_size": 2})
    pages = list(pager.pages)

    assert [len(page.jobs) for page in pages] == [2, 1]
    names = [job.name.rsplit("/", 1)[1] for page in pages for job in page.jobs]
    assert names == ["queue-a", "queue-b", "queue-c"]
    other = parent + "-other"
    assert list(run_clients.jobs.list_jobs(parent=other)) == []


def test_a_second_create_with_the_same_id_is_already_exists(run_clients, parent, record_dir):
    create_job(run_clients, parent, "twice", fake_job(record_dir))

    with pytest.raises(exceptions.AlreadyExists):
        create_job(run_clients, parent, "twice", fake_job(record_dir, "--exit", "3"))


def test_unknown_jobs_executions_and_operations_are_not_found(run_clients, parent):
    job = f"{parent}/jobs/absent"
    calls = [
        lambda: run_clients.jobs.get_job(name=job),
        lambda: run_clients.jobs.run_job(name=job),
        lambda: run_clients.jobs.delete_job(name=job),
        lambda: list(run_clients.executions.list_executions(parent=job)),
        lambda: run_clients.executions.get_execution(name=f"{job}/executions/absent-x1y2z"),
        lambda: run_clients.executions.cancel_execution(name=f"{job}/executions/absent-x1y2z"),
        lambda: run_clients.operations.get_operation(f"{parent}/operations/0"),
    ]
    for call in calls:
        with pytest.raises(exceptions.NotFound):
            call()


@pytest.mark.parametrize(
    ("job_id", "change", "error"),
    [
        ("Not_A_Dns_Label", None, exceptions.InvalidArgument),
        ("reserved-env", "reserved_env", exceptions.InvalidArgument),
        ("too-many-retries", "max_retries", exceptions.InvalidArgument),
        ("negative-parallelism", "parallelism", exceptions.InvalidArgument),
        ("zero-timeout", "timeout", exceptions.InvalidArgument),
        ("no-container", "no_container", exceptions.InvalidArgument),
        ("secret-env", "secret_env", exceptions.MethodNotImplemented),
    ],
)
def test_jobs_cloud_run_would_refuse_are_refused_and_not_created(
    run_clients, parent, record_dir, job_id, change, error
):
    job = fake_job(record_dir)
    task = job.template.template
    if change == "reserved_env":
        task.containers[0].env.append(run_v2.EnvVar(name="CLOUD_RUN_TASK_INDEX", value="7"))
    elif change == "max_retries":
        task.max_retries = 11
    elif change == "parallelism":
        job.template.parallelism = -1
    elif change == "timeout":
        task.timeout = duration_pb2.Duration(seconds=-1)
    elif change == "no_container":
        task.containers = []
    elif change == "secret_env":
        task.containers[0].env.append(
            run_v2.EnvVar(
                name="API_KEY",
                value_source=run_v2.EnvVarSource(
                    secret_key_ref=run_v2.SecretKeySelector(secret="key", version="latest")
                ),
            )
        )

    with pytest.raises(error):
        create_job(run_clients, parent, job_id, job)
    assert list(run_clients.jobs.list_jobs(parent=parent)) == []


def test_update_job_replaces_the_template_and_bumps_the_generation(run_clients, parent, record_dir):
    created = create_job(run_clients, parent, "updated", fake_job(record_dir))
    changed = fake_job(record_dir, task_count=4, parallelism=2)
    changed.name = created.name

    updated = run_clients.jobs.update_job(job=changed).result(timeout=10)

    assert updated.generation == 2 and updated.uid == created.uid
    assert updated.create_time == created.create_time and updated.etag != created.etag
    assert (updated.template.task_count, updated.template.parallelism) == (4, 2)
    assert run_clients.jobs.get_job(name=created.name) == updated


def test_deleting_a_job_removes_its_executions_and_stops_their_tasks(
    run_clients, parent, record_dir
):
    job = create_job(run_clients, parent, "deleted", fake_job(record_dir, "--sleep", "30"))
    execution = run(run_clients, job.name)
    started = wait_for(lambda: records(record_dir, execution.name), what="task start")

    deleted = run_clients.jobs.delete_job(name=job.name).result(timeout=10)

    assert deleted.name == job.name and deleted.delete_time
    with pytest.raises(exceptions.NotFound):
        run_clients.jobs.get_job(name=job.name)
    with pytest.raises(exceptions.NotFound):
        run_clients.executions.get_execution(name=execution.name)
    (record,) = started.values()
    wait_for(lambda: process_gone(record["pid"]), what="the task's end")
    assert "sigterm" in records(record_dir, execution.name)[0, 0]


@pytest.mark.parametrize(
    "name",
    ["projects/../locations/l/jobs/j", "projects/p/locations/l/jobs", "jobs/j", ""],
)
def test_malformed_job_names_are_invalid_argument(run_clients, name):
    with pytest.raises(exceptions.InvalidArgument):
        run_clients.jobs.get_job(name=name)
