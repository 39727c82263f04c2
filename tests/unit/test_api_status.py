"""Task status records (written before the answer, read by id, cancelled) and readiness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.api_core import exceptions as gexc

from task_api import create_app
from task_api.queued_records import QueuedRecords
from taskcore.errors import PublishError
from taskcore.settings import Settings
from taskcore.status import RunClaim, StatusStore, TaskState, TaskStatus, status_object_name
from tests.unit.api_fakes import FakeBucket, FakePublisher, bucket_of

# --- queued status records ---------------------------------------------------------------------


def test_an_accepted_task_has_its_queued_status_record_before_the_answer(client, storage):
    body = client.post("/submit-task", json={"task_type": "file_processing"}).get_json()

    record = bucket_of(storage).json_of(status_object_name(body["task_id"]))
    assert record["state"] == "queued"
    assert record["task_type"] == "file_processing"
    assert record["message_id"] == body["message_id"]
    assert record["submitted_at"] and record["payload"] == {}, "the payload as submitted"
    assert client.get(f"/tasks/{body['task_id']}").get_json()["state"] == "queued"


def test_every_task_of_a_batch_has_its_record_before_the_answer(client, storage):
    tasks = [{"task_type": "data_transformation", "dataset_size": n} for n in range(1, 41)]
    results = client.post("/submit-tasks", json={"tasks": tasks}).get_json()["results"]

    for result in results:
        assert bucket_of(storage).json_of(status_object_name(result["task_id"]))["state"] == (
            "queued"
        )


def test_a_task_that_was_not_published_gets_no_status_record(storage):
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"),
        publisher=FakePublisher(fail_all=True),
        storage=storage,
    )
    response = app.test_client().post("/submit-task", json={"task_type": "file_processing"})

    assert response.status_code == 503
    assert not any(name.startswith("status/") for name in bucket_of(storage).objects)


def test_the_queued_record_never_overwrites_what_the_worker_wrote():
    store = StatusStore(FakeBucket("b"))
    store.create(TaskStatus(task_id="t1", task_type="file_processing", state=TaskState.SUCCEEDED))
    records = QueuedRecords(lambda: store)

    records.write([TaskStatus(task_id="t1", task_type="file_processing", state=TaskState.QUEUED)])
    records.close()

    assert store.get("t1").state == TaskState.SUCCEEDED


def test_a_record_that_cannot_be_written_still_answers_202_for_a_task_that_is_queued(
    storage, publisher, caplog
):
    class BrokenSink:
        def create(self, status):
            raise ConnectionError("storage down")

    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"), publisher=publisher, storage=storage
    )
    app.extensions["task_api"].queued_records = QueuedRecords(BrokenSink)
    response = app.test_client().post("/submit-task", json={"task_type": "file_processing"})

    assert response.status_code == 202, "Pub/Sub has the task: it will run"
    assert "queued status record not written" in caplog.text


def test_status_records_can_be_turned_off(storage, publisher):
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket", queued_status_records=False),
        publisher=publisher,
        storage=storage,
    )
    app.test_client().post("/submit-task", json={"task_type": "file_processing"})
    assert not any(name.startswith("status/") for name in bucket_of(storage).objects)


# --- cancelling ---------------------------------------------------------------------------------


def test_cancelling_a_queued_task_cancels_it_at_once(client):
    body = client.post("/submit-task", json={"task_type": "file_processing"}).get_json()

    response = client.delete(f"/tasks/{body['task_id']}")

    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    assert client.get(f"/tasks/{body['task_id']}").get_json()["state"] == "cancelled"


def test_cancelling_a_running_task_asks_its_run_to_stop(client, storage):
    now = datetime.now(UTC)
    StatusStore(bucket_of(storage)).create(
        TaskStatus(
            task_id="busy1",
            task_type="file_processing",
            state=TaskState.RUNNING,
            run=RunClaim(id="1-aa", execution="e", started_at=now, lease_until=now + timedelta(60)),
        )
    )

    response = client.delete("/tasks/busy1")

    assert response.status_code == 202
    body = response.get_json()
    assert body["state"] == "running" and body["cancel_requested_at"]


def test_cancelling_a_finished_task_is_409_and_an_unknown_one_404(client, storage):
    StatusStore(bucket_of(storage)).create(
        TaskStatus(task_id="done1", task_type="file_processing", state=TaskState.SUCCEEDED)
    )

    assert client.delete("/tasks/done1").status_code == 409
    assert client.delete("/tasks/done1").get_json()["error"]["code"] == "task_finished"
    assert client.delete("/tasks/nobody").status_code == 404


def test_get_task_returns_its_status_record(client, storage):
    StatusStore(bucket_of(storage)).create(
        TaskStatus(task_id="abc123", task_type="data_transformation", state=TaskState.RUNNING)
    )

    response = client.get("/tasks/abc123")

    assert response.status_code == 200
    body = response.get_json()
    assert body["task_id"] == "abc123" and body["state"] == "running"
    assert response.headers["Cache-Control"] == "no-store"


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
