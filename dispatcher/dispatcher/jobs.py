"""The Cloud Run Admin API, as the dispatcher uses it: run a queue's job, count what runs.

With CLOUD_RUN_EMULATOR_HOST set (locally), the clients talk to devstack's Cloud Run Jobs stand-in on an
insecure channel; otherwise to Cloud Run itself with the service's credentials. The calls
are the same either way: `Jobs.RunJob` with overrides (task count, environment) and
`Executions.ListExecutions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.cloud import run_v2
from google.cloud.run_v2.services.executions.transports.grpc import ExecutionsGrpcTransport
from google.cloud.run_v2.services.jobs.transports.grpc import JobsGrpcTransport

from taskcore.settings import Settings

log = logging.getLogger(__name__)

# The Admin API answers in well under a second; a dispatch never waits long for it.
CALL_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ExecutionView:
    """What the dispatcher needs of one execution: when it was created, tasks still running."""

    name: str
    created: datetime
    running_tasks: int


@dataclass(frozen=True)
class Started:
    """An execution the dispatcher started."""

    execution: str
    task_count: int


class JobsGateway:
    """Runs jobs and reads their executions, in one project and region."""

    def __init__(self, settings: Settings) -> None:
        self.parent = f"projects/{settings.project_id}/locations/{settings.run_region}"
        if settings.cloud_run_emulator_host:
            jobs = run_v2.JobsClient(
                transport=JobsGrpcTransport(
                    channel=grpc.insecure_channel(settings.cloud_run_emulator_host)
                )
            )
            executions = run_v2.ExecutionsClient(
                transport=ExecutionsGrpcTransport(
                    channel=grpc.insecure_channel(settings.cloud_run_emulator_host)
                )
            )
        else:
            jobs, executions = run_v2.JobsClient(), run_v2.ExecutionsClient()
        self.jobs = jobs
        self.executions_client = executions

    def job_path(self, job: str) -> str:
        return f"{self.parent}/jobs/{job}"

    def run(self, job: str, task_count: int, env: dict[str, str]) -> Started:
        """Start an execution of `job` with task_count tasks and these env overrides."""
        request = run_v2.RunJobRequest(
            name=self.job_path(job),
            overrides=run_v2.RunJobRequest.Overrides(
                task_count=task_count,
                container_overrides=[
                    run_v2.RunJobRequest.Overrides.ContainerOverride(
                        env=[run_v2.EnvVar(name=k, value=v) for k, v in sorted(env.items())]
                    )
                ],
            ),
        )
        operation = self.jobs.run_job(request=request, timeout=CALL_TIMEOUT_SECONDS)
        # Never waited on: the execution runs for minutes. Its name is in the metadata.
        execution = getattr(operation.metadata, "name", "") if operation.metadata else ""
        return Started(execution=execution, task_count=task_count)

    def executions(self, job: str) -> list[ExecutionView]:
        """The job's recent executions (newest first), with their unfinished task counts."""
        listing = self.executions_client.list_executions(
            request=run_v2.ListExecutionsRequest(parent=self.job_path(job), page_size=50),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        views = []
        # Newest first: the first page holds every execution that can still be running.
        for execution in next(iter(listing.pages), run_v2.ListExecutionsResponse()).executions:
            running = 0
            if not execution.completion_time:
                ended = (
                    execution.succeeded_count + execution.failed_count + execution.cancelled_count
                )
                running = max(0, execution.task_count - ended)
            created = execution.create_time
            views.append(
                ExecutionView(
                    name=execution.name,
                    created=created.astimezone(UTC)
                    if created
                    else datetime.min.replace(tzinfo=UTC),
                    running_tasks=running,
                )
            )
        return views

    def close(self) -> None:
        for client in (self.jobs, self.executions_client):
            transport = getattr(client, "transport", None)
            if transport is not None:
                transport.close()
