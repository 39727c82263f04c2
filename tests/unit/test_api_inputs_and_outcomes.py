"""What a task may read is checked at submission; and an uncertain publish is said to be so."""

from __future__ import annotations

import io

import pytest

from task_api import create_app
from taskcore.errors import PublishOutcomeUnknown
from taskcore.settings import Settings
from tests.unit.api_fakes import FakePublisher, FakeStorage, bucket_of, with_sample_input

ALICE, BOB = "alice-key-000000", "bob-key-00000000"


def app_with(storage=None, publisher=None, **settings):
    storage = storage or with_sample_input(FakeStorage())
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket", **settings),
        publisher=publisher or FakePublisher(),
        storage=storage,
    )
    return app.test_client(), storage


def submit(client, key=None, **fields):
    headers = {"X-API-Key": key} if key else {}
    return client.post(
        "/submit-task", json={"task_type": "data_transformation", **fields}, headers=headers
    )


def upload(client, name, data=b'{"v": 1}\n', key=None, query=""):
    headers = {"X-API-Key": key} if key else {"X-Requested-With": "test"}
    return client.post(
        f"/uploads{query}",
        data={"file": (io.BytesIO(data), name), "name": name},
        content_type="multipart/form-data",
        headers=headers,
    )


@pytest.mark.parametrize(
    "uri, why",
    [
        ("gs://unit-bucket/status/someone-else.json", "not under"),
        ("gs://unit-bucket/outputs/t1/1-aa/results.json", "not under"),
        ("gs://another-bucket/uploads/x.jsonl", "outside the pipeline bucket"),
    ],
)
def test_an_input_outside_the_allowed_prefixes_is_refused_at_submit(uri, why):
    client, _ = app_with()
    response = submit(client, source_uri=uri)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "input_not_allowed" and why in error["message"]


def test_a_missing_or_oversized_input_is_refused_at_submit():
    client, storage = app_with(max_input_bytes=10)
    bucket_of(storage).blob("uploads/big.jsonl").upload_from_string(b"x" * 11, "text/plain")

    missing = submit(client, source_uri="gs://unit-bucket/uploads/none.jsonl")
    big = submit(client, source_uri="gs://unit-bucket/uploads/big.jsonl")

    assert missing.status_code == 400 and missing.get_json()["error"]["code"] == "input_missing"
    assert big.status_code == 400 and big.get_json()["error"]["code"] == "input_too_large"


def test_the_input_is_pinned_to_the_generation_it_had_at_submission():
    publisher = FakePublisher()
    client, storage = app_with(publisher=publisher)
    bucket_of(storage).blob("uploads/d.jsonl").upload_from_string(b'{"v": 1}\n', "text/plain")
    generation = bucket_of(storage).objects["uploads/d.jsonl"][2]

    assert submit(client, source_uri="gs://unit-bucket/uploads/d.jsonl").status_code == 202

    (envelope,) = publisher.envelopes
    assert envelope.inputs == {"gs://unit-bucket/uploads/d.jsonl": generation}


def test_a_key_cannot_read_or_replace_another_keys_upload():
    client, _ = app_with(api_keys=f"{ALICE},{BOB}")
    assert upload(client, "mine.jsonl", key=ALICE).status_code == 201

    read = submit(client, key=BOB, source_uri="gs://unit-bucket/uploads/mine.jsonl")
    replace = upload(client, "mine.jsonl", data=b"{}\n", key=BOB, query="?overwrite=true")
    own = upload(client, "mine.jsonl", data=b"{}\n", key=ALICE, query="?overwrite=true")

    assert read.status_code == 403 and read.get_json()["error"]["code"] == "input_not_yours"
    assert replace.status_code == 403 and replace.get_json()["error"]["code"] == "upload_not_yours"
    assert own.status_code == 201
    assert (
        submit(client, key=ALICE, source_uri="gs://unit-bucket/uploads/mine.jsonl").status_code
        == 202
    )


class UncertainPublisher(FakePublisher):
    """Publishes nothing it can confirm: every publish times out, maybe landed."""

    def _one(self, envelope):
        self.envelopes.append(envelope)
        raise PublishOutcomeUnknown("publish timed out")


def test_a_publish_that_timed_out_is_reported_unknown_with_its_task_id():
    client, _ = app_with(publisher=UncertainPublisher())
    response = submit(client, dataset_size=3)

    assert response.status_code == 503 and "Retry-After" in response.headers
    error = response.get_json()["error"]
    assert error["code"] == "outcome_unknown"
    assert error["details"][0]["status"] == "unknown" and error["details"][0]["task_id"]


def test_retrying_an_unknown_publish_with_the_same_key_reuses_the_task_id():
    publisher = UncertainPublisher()
    client, _ = app_with(publisher=publisher)
    headers = {"Idempotency-Key": "order-42"}
    body = {"task_type": "data_transformation", "dataset_size": 3}

    first = client.post("/submit-task", json=body, headers=headers).get_json()["error"]
    second = client.post("/submit-task", json=body, headers=headers).get_json()["error"]

    assert first["details"][0]["task_id"] == second["details"][0]["task_id"]
    assert publisher.envelopes[0].task_id == publisher.envelopes[1].task_id, (
        "if the first landed after all, both messages are one task to the worker"
    )


def test_batch_items_say_unknown_and_a_keyed_item_sent_again_is_the_same_task():
    uncertain = UncertainPublisher()
    client, storage = app_with(publisher=uncertain)
    tasks = [{"task_type": "data_transformation", "dataset_size": 3, "idempotency_key": "k1"}]

    unsure = client.post("/submit-tasks", json={"tasks": tasks})

    assert unsure.status_code == 503
    (item,) = unsure.get_json()["error"]["details"]
    assert item["status"] == "unknown" and item["task_id"]
    sure_client, _ = app_with(storage=storage)
    again = sure_client.post("/submit-tasks", json={"tasks": tasks}).get_json()["results"][0]
    assert again["status"] == "queued" and again["task_id"] == item["task_id"]
    replayed = sure_client.post("/submit-tasks", json={"tasks": tasks}).get_json()["results"][0]
    assert replayed["replayed"] is True and replayed["task_id"] == item["task_id"]
