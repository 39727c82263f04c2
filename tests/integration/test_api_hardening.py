"""The hardened submit API against the real emulators and the real server (gunicorn).

Idempotency under concurrent duplicates, status records, batches, request limits on the
wire (chunked bodies too), and a Pub/Sub outage: 503 in bounded time, then recovery
without restarting the API.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devstack.emulators import start_pubsub_emulator
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from tests.conftest import make_test_settings
from tests.integration.api_process import running_api
from tests.integration.helpers import pull_all, status_of

pytestmark = pytest.mark.integration

KEY = "integration-submit-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def api(pipeline, artifacts_dir):
    """The API under gunicorn on the bootstrapped pipeline, keys on, small body limit."""
    settings = pipeline.replace(
        api_workers=2, api_threads=8, api_keys=KEY, max_request_bytes=4096, max_upload_bytes=8192
    )
    with running_api(settings, artifacts_dir) as server:
        yield server


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """Poll until predicate() is truthy; return its value, or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


# --- idempotency -------------------------------------------------------------------------------


def test_twenty_concurrent_duplicates_publish_once_and_all_get_the_same_task(pipeline, api):
    body = {"task_type": "data_transformation", "dataset_size": 42}
    headers = {**AUTH, "Idempotency-Key": "order-20-at-once"}

    def submit(_):
        return requests.post(f"{api.url}/submit-task", json=body, headers=headers, timeout=20)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(submit, range(20)))

    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
    answers = {json.dumps(r.json(), sort_keys=True) for r in responses}
    assert len(answers) == 1  # one task_id and one message_id for all twenty
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 19
    messages = pull_all(pipeline, pipeline.subscription_path, wait=2.0)
    assert len(messages) == 1
    assert messages[0].message.attributes["task_id"] == responses[0].json()["task_id"]


def test_a_key_reused_with_another_body_is_422_and_publishes_nothing_more(pipeline, api):
    headers = {**AUTH, "Idempotency-Key": "order-reused"}
    first = requests.post(
        f"{api.url}/submit-task", json={"task_type": "file_processing"}, headers=headers, timeout=10
    )
    reused = requests.post(
        f"{api.url}/submit-task",
        json={"task_type": "file_processing", "processing_time": 3},
        headers=headers,
        timeout=10,
    )

    assert first.status_code == 202
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert len(pull_all(pipeline, pipeline.subscription_path, wait=1.5)) == 1


# --- status records ----------------------------------------------------------------------------


def test_an_accepted_task_has_a_queued_status_record_readable_by_id(pipeline, api):
    accepted = requests.post(
        f"{api.url}/submit-task", json={"task_type": "file_processing"}, headers=AUTH, timeout=10
    ).json()

    record = wait_for(lambda: status_of(pipeline, accepted["task_id"]), timeout=10)
    answer = requests.get(f"{api.url}/tasks/{accepted['task_id']}", headers=AUTH, timeout=10)

    assert record.state == "queued" and record.message_id == accepted["message_id"]
    assert answer.status_code == 200
    assert answer.json()["state"] == "queued"
    assert answer.json()["message_id"] == accepted["message_id"]
    unknown = requests.get(f"{api.url}/tasks/never-submitted", headers=AUTH, timeout=10)
    assert unknown.status_code == 404


def test_queued_records_are_written_before_the_server_stops(pipeline, artifacts_dir):
    settings = pipeline.replace(api_workers=1, api_threads=8)
    with running_api(settings, artifacts_dir) as server:
        session = requests.Session()
        ids = [
            session.post(
                f"{server.url}/submit-task", json={"task_type": "file_processing"}, timeout=10
            ).json()["task_id"]
            for _ in range(100)
        ]
        assert server.stop() == 0  # SIGTERM right after the last answer

    missing = [task_id for task_id in ids if status_of(pipeline, task_id) is None]
    assert missing == []


# --- batches -----------------------------------------------------------------------------------


def test_a_batch_is_published_together_and_bad_items_are_left_out(pipeline, api):
    tasks = [{"task_type": "data_transformation", "dataset_size": n} for n in range(1, 41)]
    tasks[7] = {"task_type": "data_transformation", "dataset_size": 0}

    response = requests.post(
        f"{api.url}/submit-tasks", json={"tasks": tasks}, headers=AUTH, timeout=10
    )

    assert response.status_code == 207
    body = response.json()
    assert (body["queued"], body["rejected"], body["failed"]) == (39, 1, 0)
    assert body["results"][7]["error"]["details"][0]["field"] == "dataset_size"
    messages = pull_all(pipeline, pipeline.subscription_path)
    queued = {r["task_id"]: r["message_id"] for r in body["results"] if r["status"] == "queued"}
    assert {m.message.attributes["task_id"]: m.message.message_id for m in messages} == queued


# --- limits on the wire ------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_json(pipeline, api):
    big = {"task_type": "data_transformation", "records": [{"x": "y" * 5000}]}

    response = requests.post(f"{api.url}/submit-task", json=big, headers=AUTH, timeout=10)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert pull_all(pipeline, pipeline.subscription_path, wait=1.0) == []


def test_a_chunked_body_over_the_limit_is_413_json(pipeline, api):
    def chunks():
        yield b'{"task_type": "data_transformation", "records": [{"x": "'
        for _ in range(16):
            yield b"y" * 1024
        yield b'"}]}'

    # A generator body goes out with Transfer-Encoding: chunked and no Content-Length.
    response = requests.post(
        f"{api.url}/submit-task",
        data=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )

    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert pull_all(pipeline, pipeline.subscription_path, wait=1.0) == []


def test_a_chunked_upload_over_its_limit_is_413_and_stores_nothing(pipeline, api):
    boundary = "b0undary"

    def chunks():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(128):  # 128 KiB: past MAX_UPLOAD_BYTES and its multipart allowance
            yield b"x" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    response = requests.post(
        f"{api.url}/uploads",
        data=chunks(),
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=10,
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    assert make_bucket(pipeline, storage_client(pipeline)).get_blob("uploads/big.bin") is None


def test_a_small_chunked_body_is_accepted(pipeline, api):
    def chunks():
        yield b'{"task_type": "file_processing",'
        yield b' "processing_time": 1}'

    response = requests.post(
        f"{api.url}/submit-task",
        data=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 202


# --- a Pub/Sub outage --------------------------------------------------------------------------


@pytest.mark.slow
def test_pubsub_down_is_503_within_5_s_and_the_api_recovers_by_itself(
    gcs_emulator, artifacts_dir, monkeypatch
):
    log_path = str(artifacts_dir / "pubsub-outage-emulator.log")
    emulator = start_pubsub_emulator(log_path=log_path)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.env_value)
        settings = make_test_settings(pubsub_emulator_host=emulator.env_value, api_keys=KEY)
        bootstrap(settings)
        with running_api(settings, artifacts_dir) as api:

            def submit():
                return requests.post(
                    f"{api.url}/submit-task",
                    json={"task_type": "data_transformation"},
                    headers=AUTH,
                    timeout=10,
                )

            assert submit().status_code == 202
            assert requests.get(f"{api.url}/ready").status_code == 200

            emulator.stop()
            started = time.monotonic()
            down = submit()
            elapsed = time.monotonic() - started

            assert down.status_code == 503, down.text
            assert elapsed <= 5.0
            assert int(down.headers["Retry-After"]) > 0
            assert down.json()["error"]["code"] == "service_unavailable"
            time.sleep(2.1)  # past the readiness cache
            not_ready = requests.get(f"{api.url}/ready", timeout=5)
            assert not_ready.status_code == 503 and not_ready.headers["Retry-After"]

            # Same port, fresh (empty) emulator: the topic has to be created again.
            emulator = start_pubsub_emulator(port=emulator.port, log_path=log_path)
            bootstrap(settings)
            recovered = wait_for(lambda: submit().status_code == 202, timeout=30, interval=0.5)
            assert recovered
            wait_for(lambda: requests.get(f"{api.url}/ready").status_code == 200, timeout=10)
            assert api.proc.poll() is None  # the same server process throughout
            assert len(pull_all(settings, settings.subscription_path)) >= 1
    finally:
        emulator.stop()
