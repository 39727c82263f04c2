"""The submit API's answers for every input, with fake clients: no network, no emulators."""

from __future__ import annotations

import importlib
import io
import logging
import threading

import pytest
from google.api_core import exceptions as gexc
from gunicorn.config import Config
from gunicorn.workers.gthread import ThreadWorker

from task_api import create_app, services
from task_api.server import gunicorn_options
from taskcore.errors import PublishError
from taskcore.settings import Settings
from tests.unit.api_fakes import SAMPLE_INPUT, FakeStorage, bucket_of, with_sample_input


class FakePublisher:
    """Records publish_task calls; returns message ids, or raises `error` when set."""

    def __init__(self, error: Exception | None = None, message_id: str | None = "msg") -> None:
        self.error = error
        self.message_id = message_id
        self.envelopes = []

    def publish_task(self, envelope):
        if self.error is not None:
            raise self.error
        self.envelopes.append(envelope)
        return self.message_id and f"{self.message_id}-{len(self.envelopes)}"


def uploaded(storage) -> dict:
    """What uploads stored: every object but the sample input and status records."""
    return {
        name: value
        for name, value in bucket_of(storage).objects.items()
        if name.startswith("uploads/") and name != SAMPLE_INPUT
    }


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({}, bucket_name="unit-bucket", max_upload_bytes=1000)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def storage() -> FakeStorage:
    return with_sample_input(FakeStorage())


@pytest.fixture
def client(settings, publisher, storage):
    return create_app(settings, publisher=publisher, storage=storage).test_client()


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


# --- POST /submit-task: success ------------------------------------------------------------


def test_valid_task_is_accepted_with_202_task_id_message_id_and_location(client, publisher):
    response = client.post(
        "/submit-task", json={"task_type": "file_processing", "filename": "sample.txt"}
    )

    assert response.status_code == 202
    body = response.get_json()
    assert body == {
        "task_id": body["task_id"],
        "message_id": "msg-1",
        "status": "queued",
        "task_type": "file_processing",
    }
    assert response.headers["Location"] == f"/tasks/{body['task_id']}"
    [envelope] = publisher.envelopes
    assert envelope.task_id == body["task_id"]
    assert envelope.task_type == "file_processing"
    assert envelope.payload == {"filename": "sample.txt"}
    # The input is pinned to the generation it had when the task was accepted.
    assert list(envelope.inputs) == ["gs://unit-bucket/uploads/sample.txt"]


def test_each_accepted_task_gets_its_own_task_id(client, publisher):
    ids = {
        client.post("/submit-task", json={"task_type": "file_processing"}).get_json()["task_id"]
        for _ in range(3)
    }
    assert len(ids) == 3 == len(publisher.envelopes)


def test_recipe_spelling_aggregation_is_accepted(client, publisher):
    response = client.post(
        "/submit-task", json={"task_type": "data_transformation", "transformation": "aggregation"}
    )
    assert response.status_code == 202
    assert publisher.envelopes[0].payload["transformation"] == "aggregate"


def test_accepted_task_is_logged_once_with_ids_and_without_the_body(client, storage, caplog):
    bucket_of(storage).blob("uploads/secret-name.csv").upload_from_string(b"x", "text/csv")
    with caplog.at_level(logging.INFO, logger="task_api"):
        body = client.post(
            "/submit-task", json={"task_type": "file_processing", "filename": "secret-name.csv"}
        ).get_json()

    accepted = [r for r in caplog.records if r.getMessage() == "task accepted"]
    assert len(accepted) == 1
    assert accepted[0].json_fields == {
        "event": "task_accepted",
        "task_id": body["task_id"],
        "task_type": "file_processing",
        "message_id": body["message_id"],
    }
    assert "secret-name.csv" not in caplog.text


# --- POST /submit-task: refusals -----------------------------------------------------------


def test_field_errors_are_400_listing_every_field_and_nothing_is_published(client, publisher):
    response = client.post(
        "/submit-task",
        json={"task_type": "file_processing", "filename": "../etc/passwd", "colour": "red"},
    )

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "schema_violation"
    fields = {d["field"]: d for d in error["details"]}
    assert set(fields) == {"filename", "colour"}
    assert all({"field", "message", "type"} <= set(d) for d in error["details"])
    assert fields["colour"]["type"] == "extra_forbidden"
    assert publisher.envelopes == []


def test_wrong_field_type_is_400(client, publisher):
    response = client.post(
        "/submit-task", json={"task_type": "data_transformation", "dataset_size": "lots"}
    )
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "dataset_size"
    assert publisher.envelopes == []


def test_unknown_task_type_lists_known_types(client, publisher):
    response = client.post("/submit-task", json={"task_type": "send_email"})

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "unknown_task_type"
    assert error["details"][0]["allowed"] == ["data_transformation", "file_processing"]
    assert "file_processing" in error["message"]
    assert publisher.envelopes == []


def test_missing_task_type_is_400_listing_known_types(client, publisher):
    response = client.post("/submit-task", json={"filename": "report.csv"})

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "missing_task_type"
    assert error["details"][0]["allowed"] == ["data_transformation", "file_processing"]
    assert publisher.envelopes == []


@pytest.mark.parametrize("task_type", [7, None, ["file_processing"]])
def test_task_type_that_is_not_a_string_is_400(client, publisher, task_type):
    response = client.post("/submit-task", json={"task_type": task_type})
    assert response.status_code == 400
    assert error_of(response)["code"] in {"invalid_task_type", "missing_task_type"}
    assert publisher.envelopes == []


@pytest.mark.parametrize("raw", [b"{", b"", b"task_type=file_processing", b"\xff\xfe{}"])
def test_body_that_is_not_json_is_400(client, publisher, raw):
    response = client.post("/submit-task", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    assert publisher.envelopes == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, publisher, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(
        "/submit-task", data=b'{"task_type": "file_processing"}', headers=headers
    )
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert publisher.envelopes == []


@pytest.mark.parametrize(
    "raw", [b"[]", b'["file_processing"]', b'"file_processing"', b"3", b"null"]
)
def test_json_that_is_not_an_object_is_400(client, publisher, raw):
    response = client.post("/submit-task", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "not_an_object"
    assert publisher.envelopes == []


def test_pubsub_unreachable_is_503_with_retry_after(settings, storage):
    publisher = FakePublisher(error=PublishError("deadline exceeded"))
    client = create_app(settings, publisher=publisher, storage=storage).test_client()

    response = client.post("/submit-task", json={"task_type": "file_processing"})

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert error_of(response)["code"] == "service_unavailable"
    assert "deadline" not in response.get_data(as_text=True)


def test_publish_without_message_id_is_503_never_202(settings, storage):
    client = create_app(
        settings, publisher=FakePublisher(message_id=None), storage=storage
    ).test_client()
    response = client.post("/submit-task", json={"task_type": "file_processing"})
    assert response.status_code == 503


def test_unexpected_error_is_json_500_without_internals(settings, storage):
    publisher = FakePublisher(error=RuntimeError("password=hunter2"))
    client = create_app(settings, publisher=publisher, storage=storage).test_client()

    response = client.post("/submit-task", json={"task_type": "file_processing"})

    assert response.status_code == 500
    assert error_of(response)["code"] == "internal_error"
    assert "hunter2" not in response.get_data(as_text=True)


# --- the recipe's convenience routes ------------------------------------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [{}, {"data": b"", "content_type": "application/json"}, {"json": {}}],
    ids=["no-body", "empty-body", "empty-object"],
)
def test_file_task_without_fields_uses_recipe_defaults(client, publisher, request_kwargs):
    response = client.post("/submit-file-task", **request_kwargs)

    assert response.status_code == 202
    assert response.get_json()["task_type"] == "file_processing"
    assert publisher.envelopes[0].payload == {"filename": "sample.txt", "processing_time": 2}


@pytest.mark.parametrize(
    "request_kwargs",
    [{}, {"data": b"", "content_type": "application/json"}, {"json": {}}],
    ids=["no-body", "empty-body", "empty-object"],
)
def test_data_task_without_fields_uses_recipe_defaults(client, publisher, request_kwargs):
    response = client.post("/submit-data-task", **request_kwargs)

    assert response.status_code == 202
    assert response.get_json()["task_type"] == "data_transformation"
    assert publisher.envelopes[0].payload == {"dataset_size": 100, "transformation": "normalize"}


def test_convenience_route_fields_override_defaults(client, publisher):
    response = client.post("/submit-data-task", json={"dataset_size": 5})
    assert response.status_code == 202
    assert publisher.envelopes[0].payload == {"dataset_size": 5, "transformation": "normalize"}


def test_convenience_route_answers_202_with_the_submit_task_shape(client):
    response = client.post("/submit-file-task", json={"filename": "sample.txt"})
    body = response.get_json()
    assert set(body) == {"task_id", "message_id", "status", "task_type"}
    assert response.headers["Location"] == f"/tasks/{body['task_id']}"


@pytest.mark.parametrize(
    "route, body",
    [
        ("/submit-data-task", {"dataset_size": 0}),
        ("/submit-data-task", {"transformation": "explode"}),
        ("/submit-file-task", {"filename": "../../x"}),
        ("/submit-file-task", {"processing_time": -1}),
    ],
)
def test_convenience_route_validates_fields(client, publisher, route, body):
    response = client.post(route, json=body)
    assert response.status_code == 400
    assert error_of(response)["details"]
    assert publisher.envelopes == []


def test_convenience_route_with_a_non_json_body_is_415(client, publisher):
    response = client.post("/submit-file-task", data=b"filename=x", content_type="text/plain")
    assert response.status_code == 415
    assert publisher.envelopes == []


def test_convenience_route_with_a_json_array_is_400(client, publisher):
    assert client.post("/submit-data-task", json=[1]).status_code == 400
    assert publisher.envelopes == []


# --- health, catalog and the JSON error pages ---------------------------------------------


def test_health_is_ok_and_creates_no_client(settings):
    app = create_app(settings)

    response = app.test_client().get("/health")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    clients = app.extensions["task_api"].clients
    assert clients._publisher is None and clients._storage is None


def test_task_types_lists_each_type_with_its_json_schema(client):
    response = client.get("/task-types")

    assert response.status_code == 200
    types = {t["name"]: t for t in response.get_json()["task_types"]}
    assert set(types) == {"file_processing", "data_transformation"}
    assert "filename" in types["file_processing"]["schema"]["properties"]
    assert types["data_transformation"]["description"]


def test_unknown_path_is_json_404(client):
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_wrong_method_is_json_405_with_allow_header(client):
    response = client.get("/submit-task")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


# --- POST /uploads ---------------------------------------------------------------------------


def upload(client, data=b"a,b\n1,2\n", filename="report.csv", query="", **form):
    form["file"] = (io.BytesIO(data), filename, "text/csv")
    return client.post(
        f"/uploads{query}",
        data=form,
        content_type="multipart/form-data",
        headers={"X-Requested-With": "test"},
    )


def test_upload_is_stored_under_uploads_and_answers_201(client, storage):
    response = upload(client, name="in/report.csv")

    assert response.status_code == 201
    assert response.get_json() == {
        "name": "in/report.csv",
        "object": "uploads/in/report.csv",
        "uri": "gs://unit-bucket/uploads/in/report.csv",
        "size": 8,
        "content_type": "text/csv",
    }
    assert uploaded(storage)["uploads/in/report.csv"][:2] == (b"a,b\n1,2\n", "text/csv")


def test_upload_without_name_uses_the_secured_filename(client, storage):
    response = upload(client, filename="../../my report.csv")
    assert response.status_code == 201
    assert response.get_json()["object"] == "uploads/my_report.csv"


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/abs", "nul\x00byte", "x" * 901, "a//b"])
def test_upload_with_an_unsafe_name_is_400(client, storage, name):
    response = upload(client, name=name)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_object_name"
    assert error["details"][0]["field"] == "name"
    assert uploaded(storage) == {}


def test_upload_whose_filename_sanitises_to_nothing_is_400(client, storage):
    response = upload(client, filename="../..")
    assert response.status_code == 400
    assert uploaded(storage) == {}


def test_upload_over_the_size_limit_is_413(client, storage):
    response = upload(client, data=b"x" * 1001)
    assert response.status_code == 413
    assert error_of(response)["code"] == "upload_too_large"
    assert uploaded(storage) == {}


def test_upload_body_far_over_the_limit_is_413_without_being_read(client, storage):
    response = upload(client, data=b"x" * 200_000)
    assert response.status_code == 413
    assert uploaded(storage) == {}


def test_upload_of_an_existing_name_is_409_and_keeps_the_original(client, storage):
    assert upload(client, data=b"first", name="same.txt").status_code == 201

    response = upload(client, data=b"second", name="same.txt")

    assert response.status_code == 409
    assert error_of(response)["code"] == "upload_exists"
    assert uploaded(storage)["uploads/same.txt"][0] == b"first"


def test_upload_with_overwrite_true_replaces_an_existing_object(client, storage):
    upload(client, data=b"first", name="same.txt")
    response = upload(client, data=b"second", name="same.txt", query="?overwrite=true")
    assert response.status_code == 201
    assert uploaded(storage)["uploads/same.txt"][0] == b"second"


def test_upload_without_a_file_part_is_400(client):
    response = client.post(
        "/uploads",
        data={"name": "x.txt"},
        content_type="multipart/form-data",
        headers={"X-Requested-With": "test"},
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "missing_file"


def test_upload_that_is_not_multipart_is_415(client):
    response = client.post("/uploads", json={"file": "x"})
    assert response.status_code == 415


def test_upload_when_storage_is_down_is_503(settings, publisher):
    storage = FakeStorage()
    bucket_of(storage).error = gexc.ServiceUnavailable("down")
    client = create_app(settings, publisher=publisher, storage=storage).test_client()
    response = upload(client)
    assert response.status_code == 503
    assert "Retry-After" in response.headers


# --- clients and server configuration ----------------------------------------------------


def test_clients_are_created_once_and_shared_across_threads(settings, monkeypatch):
    made = []

    class CountingPublisher(FakePublisher):
        def __init__(self, settings):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(services, "Publisher", CountingPublisher)
    app = create_app(settings)
    clients = app.extensions["task_api"].clients
    barrier = threading.Barrier(16)
    seen = []

    def grab():
        barrier.wait()
        seen.append(clients.publisher)

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(made) == 1
    assert all(p is made[0] for p in seen)


def test_bucket_builds_the_storage_client_once_on_first_use(settings, monkeypatch):
    made = []

    def fake_storage_client(settings):
        made.append(FakeStorage())
        return made[-1]

    monkeypatch.setattr(services, "storage_client", fake_storage_client)
    clients = create_app(settings).extensions["task_api"].clients
    assert made == []

    buckets = {id(clients.bucket) for _ in range(3)}

    assert len(made) == 1 and len(buckets) == 1
    assert clients.storage is made[0]


def test_create_app_reads_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("TOPIC_NAME", "from-env")
    app = create_app()
    assert app.extensions["task_api"].settings.topic_name == "from-env"


def test_gunicorn_options_fit_cloud_run_and_are_valid_gunicorn_settings():
    settings = Settings.from_env({"PORT": "9123", "API_WORKERS": "1", "API_THREADS": "8"})

    options = gunicorn_options(settings)

    assert options["bind"] == "0.0.0.0:9123"
    # gthread, reading each request whole before a thread takes it (task_api.buffered_worker)
    assert issubclass(options["worker_class"], ThreadWorker)
    assert options["worker_class"].read_timeout == settings.request_read_timeout_seconds
    assert (options["workers"], options["threads"], options["timeout"]) == (1, 8, 0)
    config = Config()
    for key, value in options.items():
        config.set(key, value)  # raises on an unknown name or a bad value


def test_gunicorn_config_module_reads_port_through_settings(monkeypatch):
    monkeypatch.setenv("PORT", "9321")
    monkeypatch.setenv("API_THREADS", "4")
    import task_api.gunicorn_config as config_module

    config_module = importlib.reload(config_module)

    assert config_module.bind == "0.0.0.0:9321"
    assert config_module.threads == 4
    assert issubclass(config_module.worker_class, ThreadWorker)
