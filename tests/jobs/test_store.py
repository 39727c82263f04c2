"""The stand-in's state, driven in-process: what it keeps of a long day of executions."""

from __future__ import annotations

import sys

import pytest

from devstack.jobs import wire as w
from devstack.jobs.state import Store
from devstack.jobs.wire import ApiError
from tests.jobs.standin_helpers import wait_for

PARENT = "projects/p/locations/l"


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path, term_grace=0.5, keep_executions=2)
    yield store
    assert store.shutdown(), "every task process ended"


def _run_to_completion(store: Store, job_name: str) -> tuple[str, str]:
    operation = store.run_job(w.RunJobRequest(name=job_name))
    execution = w.Execution()
    operation.metadata.Unpack(execution)
    wait_for(lambda: store.get_execution(execution.name).HasField("completion_time"))
    return execution.name, operation.name


def test_a_job_keeps_only_its_newest_finished_executions_and_their_operations(store):
    job = w.Job()
    job.template.template.containers.add(command=[sys.executable, "-c", "pass"])
    store.create_job(w.CreateJobRequest(parent=PARENT, job_id="busy", job=job))
    job_name = f"{PARENT}/jobs/busy"

    runs = [_run_to_completion(store, job_name) for _ in range(4)]

    listed = store.list_executions(w.ListExecutionsRequest(parent=job_name)).executions
    assert [e.name for e in listed] == [name for name, _ in runs[:0:-1]]
    oldest_execution, oldest_operation = runs[0]
    for forgotten in (
        lambda: store.get_execution(oldest_execution),
        lambda: store.operations.get(oldest_operation),
    ):
        with pytest.raises(ApiError) as caught:
            forgotten()
        assert caught.value.code.name == "NOT_FOUND"
    assert store.operations.get(runs[1][1]).done
    assert store.get_job(job_name).execution_count == 4
