"""Who may call the submit API, and how big and how strange a request may be."""

from __future__ import annotations

import io
import logging

import pytest

from task_api import create_app
from taskcore.settings import Settings
from tests.unit.api_fakes import FakePublisher, FakeStorage, with_sample_input

SUBMIT_KEY = "submit-key-0123456789"
OTHER_KEY = "second-submit-key"
ADMIN_KEY = "admin-key-9876543210"


def make_client(publisher=None, **overrides):
    settings = Settings.from_env({}, bucket_name="unit-bucket", **overrides)
    storage = with_sample_input(FakeStorage())
    app = create_app(settings, publisher=publisher or FakePublisher(), storage=storage)
    return app.test_client()


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


def call(client, route: str, headers: dict):
    """One request to a guarded route, with a body it would accept."""
    if route == "/uploads":
        data = {"file": (io.BytesIO(b"x"), "a.txt")}
        # An open API still wants proof the upload is not a cross-site form (X-Requested-With).
        headers = {"X-Requested-With": "test", **headers}
        return client.post(route, data=data, content_type="multipart/form-data", headers=headers)
    if route.startswith("/tasks/"):
        return client.get(route, headers=headers)
    if route == "/submit-tasks":
        return client.post(
            route, json={"tasks": [{"task_type": "file_processing"}]}, headers=headers
        )
    return client.post(route, json={"task_type": "file_processing"}, headers=headers)


GUARDED = [
    "/submit-task",
    "/submit-file-task",
    "/submit-data-task",
    "/submit-tasks",
    "/uploads",
    "/tasks/some-task",
]


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def x_api_key(key):
    return {"X-API-Key": key}


# --- the auth matrix ---------------------------------------------------------------------------


@pytest.mark.parametrize("route", GUARDED)
@pytest.mark.parametrize("style", [bearer, x_api_key], ids=["bearer", "x-api-key"])
def test_with_keys_on_the_right_key_passes_either_way(route, style):
    client = make_client(api_keys=f"{SUBMIT_KEY},{OTHER_KEY}")
    response = call(client, route, style(OTHER_KEY))
    assert response.status_code not in (401, 403), response.get_json()


@pytest.mark.parametrize("route", GUARDED)
def test_with_keys_on_no_key_is_401_missing_api_key(route):
    response = call(make_client(api_keys=SUBMIT_KEY), route, {})
    assert response.status_code == 401
    assert error_of(response)["code"] == "missing_api_key"


@pytest.mark.parametrize("route", GUARDED)
@pytest.mark.parametrize("style", [bearer, x_api_key], ids=["bearer", "x-api-key"])
def test_with_keys_on_a_wrong_key_is_401_invalid_api_key(route, style):
    response = call(make_client(api_keys=SUBMIT_KEY), route, style("not-" + SUBMIT_KEY))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


@pytest.mark.parametrize("route", GUARDED)
@pytest.mark.parametrize(
    "headers", [{}, bearer("anything"), x_api_key("anything")], ids=["none", "bearer", "x-api-key"]
)
def test_with_keys_off_every_caller_passes(route, headers):
    response = call(make_client(), route, headers)
    assert response.status_code not in (401, 403)


def test_behind_cloud_run_iam_the_key_in_x_api_key_beats_an_id_token_in_authorization():
    client = make_client(api_keys=SUBMIT_KEY)
    headers = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.id-token", "X-API-Key": SUBMIT_KEY}
    assert call(client, "/submit-task", headers).status_code == 202


def test_an_admin_key_does_not_open_submit_routes():
    client = make_client(api_keys=SUBMIT_KEY, admin_api_keys=ADMIN_KEY)
    assert call(client, "/submit-task", bearer(ADMIN_KEY)).status_code == 401


@pytest.mark.parametrize("style", [bearer, x_api_key], ids=["bearer", "x-api-key"])
def test_a_submit_key_never_opens_admin_routes(style):
    admin_off = make_client(api_keys=SUBMIT_KEY)
    admin_on = make_client(api_keys=SUBMIT_KEY, admin_api_keys=ADMIN_KEY)

    assert admin_off.get("/admin/tasks", headers=style(SUBMIT_KEY)).status_code == 404
    assert admin_on.get("/admin/tasks", headers=style(SUBMIT_KEY)).status_code == 401


def test_open_routes_need_no_key():
    client = make_client(api_keys=SUBMIT_KEY)
    for route in ("/health", "/ready", "/task-types", "/openapi.json", "/docs"):
        assert client.get(route).status_code == 200, route


def test_keys_never_reach_the_logs_or_the_answer(caplog):
    client = make_client(api_keys=SUBMIT_KEY)
    with caplog.at_level(logging.DEBUG):
        wrong = call(client, "/submit-task", bearer("wrong-" + SUBMIT_KEY))
        right = call(client, "/submit-task", x_api_key(SUBMIT_KEY))

    assert wrong.status_code == 401 and right.status_code == 202
    assert SUBMIT_KEY not in caplog.text
    assert SUBMIT_KEY not in wrong.get_data(as_text=True)


# --- request size limits -----------------------------------------------------------------------


def test_a_body_over_max_request_bytes_is_413_and_nothing_is_published():
    publisher = FakePublisher()
    client = make_client(publisher, max_request_bytes=1000)

    response = client.post(
        "/submit-task",
        json={"task_type": "data_transformation", "records": [{"x": "y" * 2000}]},
    )

    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    assert publisher.envelopes == []


def test_a_task_over_max_task_bytes_is_413_task_too_large():
    publisher = FakePublisher()
    client = make_client(publisher, max_task_bytes=2000)

    response = client.post(
        "/submit-task",
        json={"task_type": "data_transformation", "records": [{"x": "y" * 3000}]},
    )

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "task_too_large"
    assert "source_uri" in error["message"]  # says what to do instead
    assert publisher.envelopes == []


def test_a_task_just_under_max_task_bytes_is_accepted():
    client = make_client(max_task_bytes=4000)
    response = client.post(
        "/submit-task",
        json={"task_type": "data_transformation", "records": [{"x": "y" * 3000}]},
    )
    assert response.status_code == 202


def test_uploads_keep_their_own_larger_limit():
    client = make_client(max_request_bytes=1000, max_upload_bytes=50_000)
    data = {"file": (io.BytesIO(b"x" * 20_000), "big.bin")}

    response = client.post(
        "/uploads",
        data=data,
        content_type="multipart/form-data",
        headers={"X-Requested-With": "test"},
    )

    assert response.status_code == 201


# --- caller-supplied names never become unchecked object paths ----------------------------------


UNSAFE_NAMES = ["../etc/passwd", "a/../../b", "/abs", "nul\x00byte", "x" * 901, "a//b", "a\\b", "."]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_an_unsafe_filename_is_400(name):
    publisher = FakePublisher()
    response = make_client(publisher).post(
        "/submit-task", json={"task_type": "file_processing", "filename": name}
    )
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "filename"
    assert publisher.envelopes == []


@pytest.mark.parametrize("name", UNSAFE_NAMES)
@pytest.mark.parametrize("task_type", ["file_processing", "data_transformation"])
def test_an_unsafe_source_uri_is_400(name, task_type):
    publisher = FakePublisher()
    response = make_client(publisher).post(
        "/submit-task", json={"task_type": task_type, "source_uri": f"gs://unit-bucket/{name}"}
    )
    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "source_uri"
    assert publisher.envelopes == []


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_an_unsafe_upload_name_is_400(name):
    client = make_client()
    data = {"file": (io.BytesIO(b"x"), "a.txt"), "name": name}
    response = client.post(
        "/uploads",
        data=data,
        content_type="multipart/form-data",
        headers={"X-Requested-With": "test"},
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_object_name"


@pytest.mark.parametrize("task_id", ["..", ".hidden", "a" * 129, "has space", "semi;colon"])
def test_an_impossible_task_id_is_400_before_any_read(task_id):
    response = make_client().get(f"/tasks/{task_id}")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_task_id"


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "two words"])
def test_an_unusable_idempotency_key_is_400(key):
    publisher = FakePublisher()
    response = make_client(publisher).post(
        "/submit-task", json={"task_type": "file_processing"}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_idempotency_key"
    assert publisher.envelopes == []
