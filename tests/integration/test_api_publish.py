"""The submit API against the real emulators: what it publishes, what it stores, and gunicorn."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
import requests
from click.testing import CliRunner

from devstack.emulators import free_port
from task_api import create_app
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.settings import Settings
from taskctl.main import main as cli_main
from tests.integration.api_process import running_api
from tests.integration.helpers import pull_all, settings_env

pytestmark = pytest.mark.integration


@pytest.fixture
def make_client():
    """create_app(settings).test_client() with real clients, closed after the test."""
    apps = []

    def make(settings: Settings):
        app = create_app(settings)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["task_api"].clients.close()


def message_body(message) -> dict:
    return json.loads(message.message.data)


def test_submitted_task_is_published_with_envelope_and_attributes(pipeline, make_client):
    client = make_client(pipeline)

    response = client.post(
        "/submit-task", json={"task_type": "file_processing", "filename": "sample.txt"}
    )

    assert response.status_code == 202
    accepted = response.get_json()
    [message] = pull_all(pipeline, pipeline.subscription_path)
    assert message.message.message_id == accepted["message_id"]
    attributes = dict(message.message.attributes)
    assert attributes["task_id"] == accepted["task_id"]
    assert attributes["task_type"] == "file_processing"
    body = message_body(message)
    assert body["task_id"] == accepted["task_id"]
    assert body["task_type"] == "file_processing"
    assert body["payload"] == {"filename": "sample.txt"}
    assert body["schema_version"] == 1 and body["submitted_at"]


def test_convenience_routes_publish_the_recipe_defaults(pipeline, make_client):
    client = make_client(pipeline)

    file_task = client.post("/submit-file-task").get_json()
    data_task = client.post("/submit-data-task", json={"dataset_size": 7}).get_json()

    by_id = {
        m.message.attributes["task_id"]: message_body(m)
        for m in pull_all(pipeline, pipeline.subscription_path)
    }
    assert by_id[file_task["task_id"]]["payload"] == {
        "filename": "sample.txt",
        "processing_time": 2,
    }
    assert by_id[data_task["task_id"]]["payload"] == {
        "dataset_size": 7,
        "transformation": "normalize",
    }


def test_invalid_task_publishes_nothing(pipeline, make_client):
    client = make_client(pipeline)

    response = client.post(
        "/submit-task", json={"task_type": "file_processing", "filename": "../x"}
    )

    assert response.status_code == 400
    assert pull_all(pipeline, pipeline.subscription_path, wait=1.0) == []


def test_missing_topic_is_503_not_202(settings, make_client):
    client = make_client(settings)  # nothing bootstrapped: the topic does not exist

    response = client.post("/submit-task", json={"task_type": "data_transformation"})

    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_unreachable_pubsub_is_503_within_the_publish_timeout(monkeypatch, make_client):
    # A port nothing listens on: the client retries until the publish timeout, then gives up.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    client = make_client(Settings.from_env({}, publish_timeout_seconds=1.0))

    started = time.monotonic()
    response = client.post("/submit-task", json={"task_type": "data_transformation"})
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert elapsed < 5


# --- uploads --------------------------------------------------------------------------------


def post_file(client, data: bytes, name: str | None = None, query: str = ""):
    form = {"file": (io.BytesIO(data), "local.csv", "text/csv")}
    if name is not None:
        form["name"] = name
    return client.post(
        f"/uploads{query}",
        data=form,
        content_type="multipart/form-data",
        headers={"X-Requested-With": "test"},
    )


def test_upload_is_readable_back_from_gcs(pipeline, make_client):
    client = make_client(pipeline)

    response = post_file(client, b"id,value\n1,2\n", name="in/data.csv")

    assert response.status_code == 201
    body = response.get_json()
    assert body["uri"] == f"gs://{pipeline.bucket_name}/uploads/in/data.csv"
    blob = make_bucket(pipeline, storage_client(pipeline)).get_blob("uploads/in/data.csv")
    assert blob.download_as_bytes() == b"id,value\n1,2\n"
    assert blob.content_type == "text/csv"
    assert body["size"] == blob.size == 13


def test_upload_over_the_limit_is_413_and_stores_nothing(pipeline, make_client):
    client = make_client(pipeline.replace(max_upload_bytes=1024))

    response = post_file(client, b"x" * 1025, name="big.bin")

    assert response.status_code == 413
    assert make_bucket(pipeline, storage_client(pipeline)).get_blob("uploads/big.bin") is None


def test_upload_with_a_parent_path_is_400(pipeline, make_client):
    response = post_file(make_client(pipeline), b"x", name="../x")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_object_name"


def test_duplicate_upload_is_409_unless_overwrite(pipeline, make_client):
    client = make_client(pipeline)
    gcs_bucket = make_bucket(pipeline, storage_client(pipeline))

    assert post_file(client, b"first", name="dup.txt").status_code == 201
    duplicate = post_file(client, b"second", name="dup.txt")
    assert duplicate.status_code == 409
    assert gcs_bucket.blob("uploads/dup.txt").download_as_bytes() == b"first"

    replaced = post_file(client, b"second", name="dup.txt", query="?overwrite=true")
    assert replaced.status_code == 201
    assert gcs_bucket.blob("uploads/dup.txt").download_as_bytes() == b"second"


# --- the real server ----------------------------------------------------------------------


def settings_environ(settings: Settings) -> dict[str, str]:
    """The environment under which Settings.from_env() gives back these settings."""
    # settings_env writes key sets as comma-separated lists (str() of a frozenset is not one).
    return {**os.environ, **settings_env(settings)}


@pytest.fixture
def api_server(pipeline, tmp_path):
    """`python -m task_api.server` (gunicorn) on a free port; stopped after the test."""
    settings = pipeline.replace(api_workers=1, api_threads=4, max_upload_bytes=4096)
    with running_api(settings, tmp_path) as api:
        yield api.url


def test_gunicorn_server_accepts_tasks_over_http(pipeline, api_server):
    session = requests.Session()

    accepted = [
        session.post(
            f"{api_server}/submit-task",
            json={"task_type": "data_transformation", "dataset_size": n},
            timeout=10,
        )
        for n in (1, 2, 3)
    ]
    refused = session.post(f"{api_server}/submit-task", data="nope", timeout=10)
    missing = session.get(f"{api_server}/no-such-route", timeout=10)

    assert [r.status_code for r in accepted] == [202, 202, 202]
    assert refused.status_code == 415 and refused.json()["error"]["code"]
    assert missing.status_code == 404 and missing.headers["Content-Type"] == "application/json"
    messages = pull_all(pipeline, pipeline.subscription_path)
    sizes = {
        m.message.attributes["task_id"]: message_body(m)["payload"]["dataset_size"]
        for m in messages
    }
    assert sizes == {r.json()["task_id"]: n for r, n in zip(accepted, (1, 2, 3), strict=True)}


def test_gunicorn_server_stores_uploads_and_refuses_oversize(pipeline, api_server):
    small = requests.post(
        f"{api_server}/uploads",
        files={"file": ("a.txt", b"hello")},
        data={"name": "a.txt"},
        headers={"X-Requested-With": "test"},
        timeout=10,
    )
    big = requests.post(
        f"{api_server}/uploads",
        files={"file": ("b.bin", b"x" * 5000)},
        headers={"X-Requested-With": "test"},
        timeout=10,
    )

    assert small.status_code == 201
    assert big.status_code == 413 and big.json()["error"]["code"] == "upload_too_large"
    assert (
        make_bucket(pipeline, storage_client(pipeline)).blob("uploads/a.txt").download_as_bytes()
        == b"hello"
    )


def test_taskctl_submit_posts_typed_fields_through_the_api(pipeline, api_server):
    result = CliRunner().invoke(
        cli_main,
        ["submit", "data_transformation", "dataset_size=7", "transformation=aggregation"],
        env={"TASK_API_URL": api_server},
    )
    assert result.exit_code == 0, result.output
    task_id = json.loads(result.output)["task_id"]
    (message,) = pull_all(pipeline, pipeline.subscription_path)
    body = json.loads(message.message.data)
    assert body["task_id"] == task_id
    assert body["payload"] == {"dataset_size": 7, "transformation": "aggregate"}


def test_taskctl_submit_exits_non_zero_on_a_refused_task(api_server):
    result = CliRunner().invoke(
        cli_main,
        ["submit", "data_transformation", "dataset_size=-1"],
        env={"TASK_API_URL": api_server},
    )
    assert result.exit_code == 1
    assert "dataset_size" in result.output
