"""Task status records (written after the answer, read by id) and readiness, with fakes."""

from __future__ import annotations

import threading
import time

from google.api_core import exceptions as gexc

from task_api import create_app
from task_api.status_writer import StatusWriter
from taskcore.errors import PublishError
from taskcore.settings import Settings
from taskcore.status import StatusStore, TaskState, TaskStatus, status_object_name
from tests.unit.api_fakes import FakeBucket, FakePublisher, bucket_of, flush

# --- queued status records ---------------------------------------------------------------------


def test_an_accepted_task_gets_a_queued_status_record_after_the_answer(app, client, storage):
    body = client.post("/submit-task", json={"task_type": "file_processing"}).get_json()
    flush(app)

    record = bucket_of(storage).json_of(status_object_name(body["task_id"]))
    assert record["state"] == "queued"
    assert record["task_type"] == "file_processing"
    assert record["message_id"] == body["message_id"]
    assert record["submitted_at"]


def test_a_task_that_was_not_published_gets_no_status_record(storage):
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"),
        publisher=FakePublisher(fail_all=True),
        storage=storage,
    )
    response = app.test_client().post("/submit-task", json={"task_type": "file_processing"})
    flush(app)

    assert response.status_code == 503
    assert bucket_of(storage).objects == {}


def test_the_queued_record_never_overwrites_what_the_worker_wrote():
    store = StatusStore(FakeBucket("b"))
    store.create(TaskStatus(task_id="t1", task_type="file_processing", state=TaskState.SUCCEEDED))
    writer = StatusWriter(lambda: store, capacity=10)

    writer.submit(TaskStatus(task_id="t1", task_type="file_processing", state=TaskState.QUEUED))
    assert writer.flush(5)
    writer.close()

    assert store.get("t1").state == TaskState.SUCCEEDED


def test_a_full_queue_drops_records_instead_of_blocking_the_request(caplog):
    release = threading.Event()

    class SlowStore:
        written = []

        def create(self, status):
            release.wait(5)
            self.written.append(status.task_id)
            return True

    writer = StatusWriter(SlowStore, capacity=2)
    started = time.monotonic()
    results = [
        writer.submit(TaskStatus(task_id=f"t{i}", task_type="x", state=TaskState.QUEUED))
        for i in range(10)
    ]
    elapsed = time.monotonic() - started
    release.set()
    writer.close(timeout=5)

    assert elapsed < 0.5
    assert results.count(False) >= 7 and writer.dropped == results.count(False)
    assert "status record queue full" in caplog.text


def test_status_records_can_be_turned_off(storage, publisher):
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket", queued_status_records=False),
        publisher=publisher,
        storage=storage,
    )
    app.test_client().post("/submit-task", json={"task_type": "file_processing"})
    flush(app)
    assert bucket_of(storage).objects == {}


def test_get_task_returns_its_status_record(client, storage):
    StatusStore(bucket_of(storage)).create(
        TaskStatus(task_id="abc123", task_type="data_transformation", state=TaskState.RUNNING)
    )

    response = client.get("/tasks/abc123")

    assert response.status_code == 200
    body = response.get_json()
    assert body["task_id"] == "abc123" and body["state"] == "running"
    assert response.headers["Cache-Control"] == "no-store"


def test_get_task_right_after_submit_answers_from_the_pending_record(app, client):
    writer = app.extensions["task_api"].status_writer
    writer._pending["fresh1"] = TaskStatus(
        task_id="fresh1", task_type="file_processing", state=TaskState.QUEUED
    )
    assert client.get("/tasks/fresh1").get_json()["state"] == "queued"


def test_get_unknown_task_is_404_json(client):
    response = client.get("/tasks/no-such-task")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "task_not_found"


def test_get_task_when_storage_is_down_is_503(client, storage):
    bucket_of(storage).error = gexc.ServiceUnavailable("down")
    response = client.get("/tasks/abc")
    assert response.status_code == 503
    assert response.headers["Retry-After"]


# --- readiness ---------------------------------------------------------------------------------


def test_ready_is_200_when_the_topic_answers_and_health_never_asks(client, publisher):
    assert client.get("/health").status_code == 200
    assert publisher.topic_checks == 0

    response = client.get("/ready")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"topic": "ok"}}


def test_ready_is_503_with_retry_after_when_the_topic_does_not_answer(storage):
    publisher = FakePublisher(topic_error=PublishError("down"))
    client = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"), publisher=publisher, storage=storage
    ).test_client()

    response = client.get("/ready")

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "not_ready"


def test_ready_asks_pubsub_at_most_once_per_cache_period(client, publisher):
    for _ in range(20):
        client.get("/ready")
    assert publisher.topic_checks == 1
