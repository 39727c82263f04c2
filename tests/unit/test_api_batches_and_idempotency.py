"""Batches and Idempotency-Key, with fake clients that keep GCS generation semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from task_api import create_app
from task_api.idempotency import IdempotencyRecord, IdempotencyStore, body_hash
from task_api.routes.batches import MAX_BATCH_TASKS
from taskcore.errors import ApiRequestError
from taskcore.settings import Settings
from taskcore.status import status_object_name
from tests.unit.api_fakes import FakeBucket, FakePublisher, bucket_of

# --- batches -----------------------------------------------------------------------------------


def test_a_batch_of_valid_tasks_is_202_with_a_result_per_item_in_order(client, publisher):
    tasks = [{"task_type": "data_transformation", "dataset_size": n} for n in range(1, 6)]

    response = client.post("/submit-tasks", json={"tasks": tasks})

    assert response.status_code == 202
    body = response.get_json()
    assert (body["queued"], body["rejected"], body["failed"]) == (5, 0, 0)
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert all(
        r["status"] == "queued" and r["task_id"] and r["message_id"] for r in body["results"]
    )
    assert [e.payload["dataset_size"] for e in publisher.envelopes] == [1, 2, 3, 4, 5]


def test_one_bad_item_does_not_sink_the_others(app, client, publisher, storage):
    tasks = [
        {"task_type": "file_processing", "filename": "sample.txt"},
        {"task_type": "file_processing", "filename": "../escape"},
        "not an object",
        {"task_type": "send_email"},
        {"dataset_size": 3},
        {"task_type": "data_transformation", "dataset_size": 3},
    ]

    response = client.post("/submit-tasks", json={"tasks": tasks})

    assert response.status_code == 207
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [
        "queued",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "queued",
    ]
    codes = [r.get("error", {}).get("code") for r in results]
    assert codes == [
        None,
        "schema_violation",
        "not_an_object",
        "unknown_task_type",
        "missing_task_type",
        None,
    ]
    assert results[1]["error"]["details"][0]["field"] == "filename"
    assert len(publisher.envelopes) == 2
    queued = {status_object_name(r["task_id"]) for r in results if r["status"] == "queued"}
    assert queued == {n for n in bucket_of(storage).objects if n.startswith("status/")}


def test_items_pubsub_did_not_confirm_are_failed_and_retryable(storage):
    publisher = FakePublisher(fail_task_types={"file_processing"})
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"), publisher=publisher, storage=storage
    )
    tasks = [{"task_type": "file_processing"}, {"task_type": "data_transformation"}]

    response = app.test_client().post("/submit-tasks", json={"tasks": tasks})

    assert response.status_code == 207
    assert response.headers["Retry-After"]
    first, second = response.get_json()["results"]
    assert first["status"] == "failed" and first["error"]["code"] == "service_unavailable"
    assert "fake Pub/Sub" not in first["error"]["message"]
    assert second["status"] == "queued"


def test_a_batch_nothing_of_which_was_published_is_503(storage):
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"),
        publisher=FakePublisher(fail_all=True),
        storage=storage,
    )
    response = app.test_client().post(
        "/submit-tasks", json={"tasks": [{"task_type": "file_processing"}] * 3}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert len(response.get_json()["error"]["details"]) == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tasks": []},
        {"tasks": "file_processing"},
        {"tasks": [{"task_type": "file_processing"}] * (MAX_BATCH_TASKS + 1)},
        {"tasks": [{"task_type": "file_processing"}], "extra": 1},
    ],
    ids=["no-tasks", "empty", "not-a-list", "too-many", "extra-field"],
)
def test_a_malformed_batch_is_400_and_publishes_nothing(client, publisher, body):
    response = client.post("/submit-tasks", json=body)
    assert response.status_code == 400
    assert publisher.envelopes == []


def test_a_full_batch_of_500_is_accepted(client, publisher):
    tasks = [{"task_type": "data_transformation", "dataset_size": 1}] * MAX_BATCH_TASKS
    response = client.post("/submit-tasks", json={"tasks": tasks})
    assert response.status_code == 202
    assert len(publisher.envelopes) == MAX_BATCH_TASKS


def test_a_batch_refuses_an_idempotency_key_rather_than_ignore_it(client, publisher):
    response = client.post(
        "/submit-tasks",
        json={"tasks": [{"task_type": "file_processing"}]},
        headers={"Idempotency-Key": "k1"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "idempotency_not_supported"
    assert publisher.envelopes == []


# --- idempotency (generation semantics of the fake bucket) --------------------------------------


def submit(client, body, key="order-1", **headers):
    return client.post("/submit-task", json=body, headers={"Idempotency-Key": key, **headers})


def test_the_same_key_and_body_return_the_same_task_and_publish_once(client, publisher):
    body = {"task_type": "file_processing", "processing_time": 1}

    first = submit(client, body)
    again = submit(client, {"processing_time": 1, "task_type": "file_processing"})

    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(publisher.envelopes) == 1


def test_the_same_key_with_another_body_is_422(client, publisher):
    submit(client, {"task_type": "file_processing", "processing_time": 1})

    response = submit(client, {"task_type": "file_processing", "processing_time": 2})

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert len(publisher.envelopes) == 1


def test_keys_are_scoped_by_api_key(storage, publisher):
    client = create_app(
        Settings.from_env({}, bucket_name="unit-bucket", api_keys="alice,bob"),
        publisher=publisher,
        storage=storage,
    ).test_client()
    body = {"task_type": "file_processing"}

    alice = submit(client, body, Authorization="Bearer alice").get_json()
    bob = submit(client, body, Authorization="Bearer bob").get_json()

    assert alice["task_id"] != bob["task_id"]
    assert len(publisher.envelopes) == 2


def test_a_failed_publish_releases_the_key_and_the_retry_keeps_the_task_id(storage):
    publisher = FakePublisher(fail_all=True)
    client = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"), publisher=publisher, storage=storage
    ).test_client()
    body = {"task_type": "file_processing"}

    assert submit(client, body).status_code == 503
    [name] = [n for n in bucket_of(storage).objects if n.startswith("idempotency/")]
    failed_task = bucket_of(storage).json_of(name)
    assert failed_task["state"] == "failed"

    publisher.fail_all = False
    retry = submit(client, body)

    assert retry.status_code == 202
    assert retry.get_json()["task_id"] == failed_task["task_id"]
    assert bucket_of(storage).json_of(name)["state"] == "published"


def test_requests_without_the_header_never_touch_idempotency_records(client, storage):
    client.post("/submit-task", json={"task_type": "file_processing"})
    assert not any(n.startswith("idempotency/") for n in bucket_of(storage).objects)


def test_a_waiting_request_gives_up_with_409_and_retry_after():
    bucket = FakeBucket("b")
    store = IdempotencyStore(lambda: bucket, publish_timeout=0.2)
    hashed = body_hash("file_processing", {})
    store.claim("idempotency/k.json", "winner", "file_processing", hashed)

    with pytest.raises(ApiRequestError) as raised:
        store.claim("idempotency/k.json", "loser", "file_processing", hashed)

    assert raised.value.status == 409
    assert raised.value.retry_after >= 1


def test_an_abandoned_claim_is_taken_over_with_its_task_id():
    bucket = FakeBucket("b")
    store = IdempotencyStore(lambda: bucket, publish_timeout=0.2)
    hashed = body_hash("file_processing", {})
    stale = IdempotencyRecord(
        task_id="crashed-winner",
        task_type="file_processing",
        body_hash=hashed,
        state="pending",
        updated_at=datetime.now(UTC) - timedelta(minutes=5),
    )
    bucket.blob("idempotency/k.json").upload_from_string(stale.model_dump_json())

    claim = store.claim("idempotency/k.json", "newcomer", "file_processing", hashed)

    assert not claim.replay
    assert claim.record.task_id == "crashed-winner"
