"""How a recorded request becomes a call of the permission contract, the dispatcher's included.

iam_contract.grpc_call names a gRPC request's method and resource; resource_names maps a
resource to what the contract calls it (every queue's topic, subscription and job among
them); Call.listed_in accepts a call on one queue's resource where the contract lists every
queue's. The last test runs Google's own Cloud Run client through a recorder.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import grpc
import pytest
from google.cloud import run_v2
from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport
from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport
from google.longrunning import operations_pb2
from google.pubsub_v1 import types as pubsub_types
from iam_contract import (
    CALLS,
    EVERY_QUEUE_JOB,
    EVERY_QUEUE_SUBSCRIPTION,
    EVERY_QUEUE_TOPIC,
    METHOD_PERMISSIONS,
    PROJECT,
    RUN_WITH_OVERRIDES,
    Call,
    grpc_call,
    resource_names,
)
from traffic import Recording, grpc_recorder, grpc_serving

JOB = "projects/p/locations/europe-west1/jobs/background-worker-urgent"


def serialized(message) -> bytes:
    return type(message).serialize(message)


def test_a_run_with_overrides_needs_the_override_permission():
    overrides = run_v2.RunJobRequest.Overrides(task_count=3)
    request = run_v2.RunJobRequest(name=JOB, overrides=overrides)
    method, resource = grpc_call("google.cloud.run.v2.Jobs/RunJob", serialized(request))
    assert (method, resource) == (RUN_WITH_OVERRIDES, JOB)
    assert "run.jobs.runWithOverrides" in METHOD_PERMISSIONS[method]


def test_a_run_without_overrides_is_a_plain_run():
    request = run_v2.RunJobRequest(name=JOB)
    method, resource = grpc_call("google.cloud.run.v2.Jobs/RunJob", serialized(request))
    assert (method, resource) == ("google.cloud.run.v2.Jobs/RunJob", JOB)
    assert METHOD_PERMISSIONS[method] == {"run.jobs.run"}


def test_listing_executions_names_the_job_as_parent():
    request = run_v2.ListExecutionsRequest(parent=JOB)
    method = "google.cloud.run.v2.Executions/ListExecutions"
    assert grpc_call(method, serialized(request)) == (method, JOB)


def test_a_pubsub_request_names_its_subscription():
    request = pubsub_types.PullRequest(subscription="projects/p/subscriptions/s", max_messages=1)
    method = "google.pubsub.v1.Subscriber/Pull"
    assert grpc_call(method, serialized(request)) == (method, "projects/p/subscriptions/s")


def test_a_request_of_an_unknown_service_names_no_resource():
    assert grpc_call("example.v1.Thing/Do", b"\x0a\x01x") == ("example.v1.Thing/Do", "?")


def settings_with(env: dict[str, str]) -> SimpleNamespace:
    """What resource_names reads of a Settings: its project and its environment."""
    return SimpleNamespace(project_id="p", as_environ=lambda: env)


def test_resource_names_cover_every_queue_the_settings_know():
    table = {
        "default": {"job": "background-worker"},
        "urgent": {"job": "background-worker-urgent"},
    }
    env = {
        "TOPIC_NAME": "background-tasks",
        "SUBSCRIPTION_NAME": "background-tasks-worker",
        "DLQ_TOPIC_NAME": "background-tasks-dlq",
        "DLQ_SUBSCRIPTION_NAME": "background-tasks-dlq-sub",
        "BUCKET_NAME": "b",
        "QUEUES": json.dumps(table),
        "RUN_REGION": "europe-west1",
    }
    names = resource_names(settings_with(env))
    assert names["projects/p/topics/background-tasks"] == "TOPIC_NAME"
    assert names["projects/p/topics/background-tasks-urgent"] == EVERY_QUEUE_TOPIC
    assert names["projects/p/subscriptions/background-tasks-worker-urgent"] == (
        EVERY_QUEUE_SUBSCRIPTION
    )
    assert names["projects/p/topics/background-tasks-dlq"] == "DLQ_TOPIC_NAME"
    assert names[JOB] == EVERY_QUEUE_JOB
    assert names["projects/p/locations/europe-west1/jobs/background-worker"] == EVERY_QUEUE_JOB
    assert names["projects/p"] == PROJECT
    # A worker knows its own queue only.
    worker = {**env, "QUEUES": "", "QUEUE": "batch"}
    worker_names = resource_names(settings_with(worker))
    assert worker_names["projects/p/subscriptions/background-tasks-worker-batch"] == (
        EVERY_QUEUE_SUBSCRIPTION
    )


def test_a_call_on_the_default_queue_is_one_on_every_queue():
    publish = "google.pubsub.v1.Publisher/Publish"
    assert Call(publish, "TOPIC_NAME").listed_in(CALLS["api"])
    assert Call(publish, EVERY_QUEUE_TOPIC).listed_in(CALLS["worker"])
    # The worker consumes every queue's subscription, but publishes to no DLQ subscription.
    assert not Call(publish, "DLQ_SUBSCRIPTION_NAME").listed_in(CALLS["worker"])
    # Listing every queue's resource does not list one that is not a queue's.
    assert not Call(publish, "DLQ_TOPIC_NAME").listed_in(CALLS["api"])


class _FakeCloudRun(grpc.GenericRpcHandler):
    """Answers RunJob with an operation and ListExecutions with an empty page."""

    def service(self, handler_call_details):
        answers = {
            "/google.cloud.run.v2.Jobs/RunJob": operations_pb2.Operation(
                name="projects/p/locations/europe-west1/operations/1"
            ).SerializeToString(),
            "/google.cloud.run.v2.Executions/ListExecutions": serialized(
                run_v2.ListExecutionsResponse()
            ),
        }
        answer = answers.get(handler_call_details.method)
        if answer is None:
            return None
        return grpc.unary_unary_rpc_method_handler(lambda request, context: answer)


@pytest.fixture
def fake_cloud_run():
    with grpc_serving(_FakeCloudRun()) as host:
        yield host


@pytest.mark.integration
def test_the_recorder_sees_the_dispatchers_cloud_run_calls(fake_cloud_run):
    recording = Recording()
    with grpc_recorder(fake_cloud_run, recording) as host:
        channel = grpc.insecure_channel(host)
        try:
            jobs = run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel))
            overrides = run_v2.RunJobRequest.Overrides(task_count=4)
            jobs.run_job(request=run_v2.RunJobRequest(name=JOB, overrides=overrides))
            executions = run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel))
            assert list(executions.list_executions(parent=JOB)) == []
        finally:
            channel.close()
    seen = {(request.method, request.resource) for request in recording.snapshot()}
    assert seen == {
        (RUN_WITH_OVERRIDES, JOB),
        ("google.cloud.run.v2.Executions/ListExecutions", JOB),
    }
