"""Fixtures for the Cloud Run Jobs stand-in: the stand-in as a child process and the real
google-cloud-run clients on an insecure channel to it, as the dispatcher builds them."""

from __future__ import annotations

import uuid

import grpc
import pytest

from tests.jobs.standin_helpers import STANDIN_MARK, TERM_GRACE, RunClients


@pytest.fixture(scope="session")
def jobs_standin(artifacts_dir, tmp_path_factory):
    """One stand-in for the session, with a short SIGTERM-to-SIGKILL grace; always stopped."""
    from devstack.emulators import start_jobs_standin

    with start_jobs_standin(
        log_path=str(artifacts_dir / "jobs-standin.log"),
        work_dir=str(tmp_path_factory.mktemp("jobs-standin")),
        term_grace=TERM_GRACE,
        env=STANDIN_MARK,
    ) as standin:
        yield standin


def open_clients(address: str) -> RunClients:
    """JobsClient, ExecutionsClient and an operations client on one insecure channel."""
    from google.api_core import operations_v1
    from google.cloud import run_v2
    from google.cloud.run_v2.services.executions.transports.grpc import ExecutionsGrpcTransport
    from google.cloud.run_v2.services.jobs.transports.grpc import JobsGrpcTransport

    channel = grpc.insecure_channel(address)
    return RunClients(
        channel=channel,
        jobs=run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel)),
        executions=run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel)),
        operations=operations_v1.OperationsClient(channel),
    )


@pytest.fixture(scope="session")
def run_clients(jobs_standin):
    """Clients of the session's stand-in."""
    clients = open_clients(jobs_standin.env_value)
    yield clients
    clients.channel.close()


@pytest.fixture
def parent() -> str:
    """A location of this test's own, so that listings see only its jobs."""
    return f"projects/test-project/locations/loc-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def record_dir(tmp_path):
    """Where fake tasks write what they saw."""
    path = tmp_path / "records"
    path.mkdir()
    return path
