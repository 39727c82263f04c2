"""google.longrunning.Operations on the stand-in: RunJob's operation is waited for, listed
and deleted through the clients' own operation methods."""

from __future__ import annotations

import time

import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.longrunning import operations_pb2

from tests.jobs.standin_helpers import create_job, fake_job, wait_until_done


def _wait(run_clients, name: str, **timeout):
    # google-cloud-run's transport has no deserializer for WaitOperation: it hands back bytes.
    raw = run_clients.jobs.wait_operation(request={"name": name, "timeout": timeout})
    return operations_pb2.Operation.FromString(raw) if isinstance(raw, bytes) else raw


def test_wait_operation_answers_when_the_execution_ends_or_its_timeout_passes(
    run_clients, parent, record_dir
):
    job = create_job(run_clients, parent, "waited", fake_job(record_dir, "--sleep", "1"))
    operation = run_clients.jobs.run_job(name=job.name).operation

    started = time.monotonic()
    early = _wait(run_clients, operation.name, nanos=200_000_000)
    waited_early = time.monotonic() - started
    final = _wait(run_clients, operation.name, seconds=20)

    assert not early.done and 0.2 <= waited_early < 1.0
    assert final.done
    execution = run_v2.Execution.deserialize(final.response.value)
    assert execution.succeeded_count == 1 and execution.completion_time


def test_operations_are_listed_under_their_location_and_can_be_deleted(
    run_clients, parent, record_dir
):
    job = create_job(run_clients, parent, "listed-ops", fake_job(record_dir))
    operation = run_clients.jobs.run_job(name=job.name).operation
    wait_until_done(run_clients, run_v2.Execution.deserialize(operation.metadata.value).name)

    listed = list(run_clients.operations.list_operations(parent, filter_=""))
    run_clients.operations.delete_operation(operation.name)

    assert operation.name in {op.name for op in listed}
    assert len(listed) == 2, "CreateJob's and RunJob's"
    assert all(isinstance(op, operations_pb2.Operation) and op.done for op in listed)
    with pytest.raises(exceptions.NotFound):
        run_clients.operations.get_operation(operation.name)
