"""The permission contract holds for the code's real traffic, not only for a hand-kept list.

The API (gunicorn, as on Cloud Run) and a worker execution (`python -m taskctl worker`, as
the Cloud Run job runs it) each talk to the emulators through their own recording proxies
while they do everything their routes and outcomes involve. Every request they make must be
a call iam_contract.CALLS lists for them, which test_permissions.py checks infra/iam.tf
grants: a new call fails here until it is listed, and then there until it is granted.

The dispatcher's calls (RunJob with overrides, ListExecutions on each queue's job) are
recorded the same way: the API's Cloud Run client talks to a recorder in front of the local
Jobs stand-in (iam_contract.grpc_call decodes run_v2 requests, and records a RunJob that
carries overrides as RUN_WITH_OVERRIDES).
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud.storage._bucket_metadata_cache import BucketMetadataCache
from iam_contract import (
    CALLS,
    METHOD_PERMISSIONS,
    RUN_WITH_OVERRIDES,
    TOLERATED_DENIALS,
    Call,
    resource_names,
)
from traffic import Recording, recording_proxies

from devstack.emulators import start_jobs_standin
from devstack.local_jobs import define_worker_jobs
from taskcore.bootstrap import bootstrap
from taskcore.settings import Settings
from tests.conftest import make_test_settings
from tests.integration.api_process import running_api
from tests.integration.dlq_helpers import seed_dead_letters
from tests.integration.helpers import publish_tasks, upload
from tests.integration.worker_process import run_worker_execution
from tests.registries import builtin_registry

pytestmark = pytest.mark.integration

SUBMIT_KEY, ADMIN_KEY = "submit-key", "admin-key"

# Calls the code makes today that its roles do not allow, each with why and until when. An
# entry that stops happening fails the test too: delete it with the fix.
KNOWN_GAPS: dict[str, dict[Call, str]] = {}


def observed_calls(recording: Recording, settings: Settings) -> set[Call]:
    """The recorded requests as calls on the env-var-named resources of these settings."""
    names = resource_names(settings)
    calls = set()
    for request in recording.snapshot():
        assert request.method in METHOD_PERMISSIONS, (
            f"the code called {request.method} on {request.resource}: add its IAM permission "
            "to iam_contract.METHOD_PERMISSIONS from Google's reference"
        )
        assert request.resource in names, (
            f"{request.method} on {request.resource}, which is none of the resources "
            "Terraform creates and names to the code"
        )
        calls.add(Call(request.method, names[request.resource]))
    return calls


# What each scenario must have been seen doing: proof its traffic went through the recorders.
REACHED = {
    "api": {
        Call("google.pubsub.v1.Publisher/Publish", "TOPIC_NAME"),
        Call("google.pubsub.v1.Publisher/GetTopic", "TOPIC_NAME"),
        Call("google.pubsub.v1.Subscriber/Pull", "DLQ_SUBSCRIPTION_NAME"),
        Call("google.pubsub.v1.Subscriber/Acknowledge", "DLQ_SUBSCRIPTION_NAME"),
        Call("storage.objects.insert?ifGenerationMatch=0", "BUCKET_NAME"),
        Call("storage.objects.insert", "BUCKET_NAME"),
        Call("storage.objects.get", "BUCKET_NAME"),
        Call("storage.objects.list", "BUCKET_NAME"),
    },
    "worker": {
        Call("google.pubsub.v1.Subscriber/Pull", "SUBSCRIPTION_NAME"),
        Call("google.pubsub.v1.Subscriber/Acknowledge", "SUBSCRIPTION_NAME"),
        Call("google.pubsub.v1.Subscriber/ModifyAckDeadline", "SUBSCRIPTION_NAME"),
        Call("google.pubsub.v1.Publisher/Publish", "DLQ_TOPIC_NAME"),
        Call("storage.objects.insert?ifGenerationMatch=0", "BUCKET_NAME"),
        Call("storage.objects.insert", "BUCKET_NAME"),
        Call("storage.objects.get", "BUCKET_NAME"),
    },
}


def assert_within_contract(component: str, observed: set[Call]) -> None:
    missed = sorted(REACHED[component] - observed)
    assert not missed, f"the {component} scenario never reached the recorders with {missed}"
    gaps = KNOWN_GAPS.get(component, {})
    tolerated = {c for c in observed if c.method in TOLERATED_DENIALS}
    unlisted = sorted(
        c for c in observed - set(gaps) - tolerated if not c.listed_in(CALLS[component])
    )
    assert not unlisted, (
        f"the {component} makes calls iam_contract.CALLS[{component!r}] does not list (and "
        "so infra/iam.tf is not checked to grant):\n  " + "\n  ".join(map(str, unlisted))
    )
    fixed = sorted(set(gaps) - observed)
    assert not fixed, f"known gaps no longer happen; delete them from KNOWN_GAPS: {fixed}"


@pytest.fixture
def recorded(pubsub_emulator, gcs_emulator):
    """Fresh resources, and recording proxies in front of the emulators."""
    settings = make_test_settings()
    bootstrap(settings)
    with recording_proxies(pubsub_emulator.env_value, gcs_emulator.env_value) as recorders:
        through = settings.replace(
            pubsub_emulator_host=recorders.pubsub_host,
            storage_emulator_host=recorders.storage_url,
        )
        yield settings, through, recorders.recording


def test_api_calls_are_in_its_permission_contract(recorded, artifacts_dir):
    direct, through, recording = recorded
    replayed, purged = seed_dead_letters(direct, 2)
    keys = {"API_KEYS": SUBMIT_KEY, "ADMIN_API_KEYS": ADMIN_KEY}
    with running_api(through, artifacts_dir, extra_env=keys) as api:

        def call(method: str, path: str, status, key: str = SUBMIT_KEY, **kwargs):
            headers = {"X-API-Key": key, **kwargs.pop("headers", {})}
            response = requests.request(
                method, api.url + path, headers=headers, timeout=60, **kwargs
            )
            allowed = status if isinstance(status, tuple) else (status,)
            assert response.status_code in allowed, f"{method} {path}: {response.text}"
            return response.json()

        call("GET", "/ready", 200)
        for query in ("", "?overwrite=true"):
            call("POST", f"/uploads{query}", 201, files={"file": ("in.csv", b"a,b\n1,2\n")})
        task = {"task_type": "file_processing", "filename": "in.csv"}
        task_id = call("POST", "/submit-task", 202, json=task)["task_id"]
        for _ in range(2):
            call("POST", "/submit-task", 202, json=task, headers={"Idempotency-Key": "k-1"})
        call("POST", "/submit-tasks", 202, json={"tasks": [task, task]})
        # Read either way (the queued record is written in the background): the GET is the point.
        call("GET", f"/tasks/{task_id}", (200, 404))
        call("GET", "/admin/overview", 200, key=ADMIN_KEY)
        call("GET", "/admin/tasks?status=queued", 200, key=ADMIN_KEY)
        assert call("GET", "/admin/dlq", 200, key=ADMIN_KEY)["in_dlq"] == 2
        call("GET", f"/admin/dlq/{replayed}", 200, key=ADMIN_KEY)
        body = {"task_ids": [replayed]}
        assert call("POST", "/admin/dlq/replay", 200, key=ADMIN_KEY, json=body)["done"] == 1
        body = {"task_ids": [purged], "archive": True}
        call("POST", "/admin/dlq/purge", 200, key=ADMIN_KEY, json=body)

    assert_within_contract("api", observed_calls(recording, direct))


def test_worker_calls_are_in_its_permission_contract(recorded, artifacts_dir):
    direct, through, recording = recorded
    upload(direct, "in.txt", b"hello\n")
    publish_tasks(
        direct,
        [
            ("data_transformation", {"dataset_size": 10}),
            ("file_processing", {"filename": "in.txt"}),
            ("file_processing", {"filename": "absent.txt"}),
            # Past TASK_TIMEOUT_SECONDS: failed, returned to the queue, redelivered.
            ("file_processing", {"filename": "in.txt", "processing_time": 5}),
        ],
    )
    settings = through.replace(task_timeout_seconds=1, max_messages=6, run_budget_seconds=30)
    run_worker_execution(settings, artifacts_dir / "permission-traffic-worker.log")

    assert_within_contract("worker", observed_calls(recording, direct))


def test_dispatcher_calls_are_in_the_apis_permission_contract(
    pubsub_emulator, gcs_emulator, tmp_path, artifacts_dir
):
    """The API's dispatcher, through a recorder in front of the Cloud Run Jobs stand-in: it
    starts an execution (RunJob with overrides) and lists the job's executions."""
    job = f"worker-{uuid.uuid4().hex[:8]}"
    settings = make_test_settings(
        dispatch_enabled=True, worker_job_name=job, queues=json.dumps({"default": {"job": job}})
    )
    bootstrap(settings)
    standin = start_jobs_standin(
        log_path=str(tmp_path / "standin.log"), work_dir=str(tmp_path / "jobs"), term_grace=1.0
    )
    try:
        define_worker_jobs(standin.env_value, settings, builtin_registry())
        with recording_proxies(
            pubsub_emulator.env_value, gcs_emulator.env_value, jobs_upstream=standin.env_value
        ) as recorders:
            through = settings.replace(
                pubsub_emulator_host=recorders.pubsub_host,
                storage_emulator_host=recorders.storage_url,
                cloud_run_emulator_host=recorders.jobs_host,
            )
            with running_api(through, artifacts_dir) as api:
                task = {"task_type": "data_transformation", "dataset_size": 3}
                answer = requests.post(f"{api.url}/submit-task", json=task, timeout=30)
                assert answer.status_code == 202, answer.text
                assert requests.post(f"{api.url}/internal/tick", timeout=30).ok
            calls = observed_calls(recorders.recording, settings)
    finally:
        standin.stop()
    dispatched = {c for c in calls if c.method.startswith("google.cloud.run.v2.")}
    assert {c.method for c in dispatched} >= {
        RUN_WITH_OVERRIDES,
        "google.cloud.run.v2.Executions/ListExecutions",
    }, dispatched
    unlisted = sorted(
        c for c in calls if not c.listed_in(CALLS["api"]) and c.method not in TOLERATED_DENIALS
    )
    assert not unlisted, f"the dispatcher makes calls CALLS['api'] does not list: {unlisted}"


def test_the_contract_check_rejects_an_unlisted_call():
    unlisted = {Call("google.pubsub.v1.Publisher/Publish", "DLQ_TOPIC_NAME")}
    with pytest.raises(AssertionError, match="does not list"):
        assert_within_contract("api", REACHED["api"] | unlisted)


class _ForbiddenClient:
    """A storage client whose account lacks storage.buckets.get, as ours do in production."""

    def get_bucket(self, name, timeout=None):
        raise gexc.Forbidden(f"no storage.buckets.get on {name}")

    def bucket(self, name):
        return self

    def exists(self):
        raise gexc.Forbidden("no storage.buckets.get")


def test_storage_client_carries_on_when_its_bucket_read_is_denied():
    """Why storage.buckets.get is a tolerated denial, not a grant (TOLERATED_DENIALS)."""
    cache = BucketMetadataCache(_ForbiddenClient())
    cache._fetch_background("bucket")  # the background read: no exception, a fallback
    assert cache.get("bucket") is not None
    cache._verify_existence_background("bucket")  # the existence check after a 404
    assert cache.get("bucket") is not None
