"""The real worker (`python -m taskctl worker`, the job's default command) runs as the tasks
of a stand-in execution against the emulators and processes what was published."""

from __future__ import annotations

import pytest
from google.cloud import run_v2

from tests.integration.helpers import publish_tasks, status_of
from tests.jobs.standin_helpers import create_job, execution_id, execution_log, wait_until_done

pytestmark = pytest.mark.integration


def test_worker_tasks_started_through_the_standin_process_the_published_tasks(
    pipeline, run_clients, parent
):
    ids = publish_tasks(
        pipeline,
        [("data_transformation", {"dataset_size": 20, "transformation": "aggregation"})] * 4,
    )
    # As Terraform defines it: an image (ignored here), no command (the image's CMD,
    # `taskctl worker`), the settings as plain environment variables.
    worker_job = run_v2.Job(
        template=run_v2.ExecutionTemplate(
            template=run_v2.TaskTemplate(
                containers=[
                    run_v2.Container(
                        image="example.invalid/worker:latest",
                        env=[
                            run_v2.EnvVar(name=k, value=v)
                            for k, v in pipeline.as_environ().items()
                            if not k.startswith("CLOUD_RUN_")
                        ],
                    )
                ],
                max_retries=0,
            )
        )
    )
    job = create_job(run_clients, parent, "worker", worker_job)

    operation = run_clients.jobs.run_job(request={"name": job.name, "overrides": {"task_count": 2}})
    done = wait_until_done(run_clients, operation.metadata.name, timeout=60)

    log = execution_log(done)
    assert (done.succeeded_count, done.failed_count) == (2, 0), log
    statuses = [status_of(pipeline, task_id) for task_id in ids]
    assert [s.state for s in statuses] == ["succeeded"] * 4
    assert {s.execution for s in statuses} == {execution_id(done.name)}
    assert "[task 0 attempt 0] " in log and "[task 1 attempt 0] " in log
