"""GET /tasks/<id>/outputs and /tasks/<id>/outputs/<name> on the real emulators."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from background_worker.worker import drain_subscription
from task_api import close_app, create_app
from task_api.routes import outputs as outputs_route
from taskcore.client import TaskClient
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.errors import TaskConflictError, TaskNotFoundError
from taskcore.status import OutputRef, StatusStore, TaskState, TaskStatus
from taskctl.main import main as cli_main
from tests.integration.helpers import outputs_of, publish_tasks, status_of, upload
from tests.integration.served_app import served_api

pytestmark = pytest.mark.integration

SUBMIT_KEY = "outputs-submit-key"
ADMIN_KEY = "outputs-admin-key"


@pytest.fixture
def keyed(pipeline):
    return pipeline.replace(api_keys=frozenset({SUBMIT_KEY}), admin_api_keys=frozenset({ADMIN_KEY}))


@pytest.fixture
def client(keyed):
    app = create_app(keyed)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = SUBMIT_KEY
    yield client
    close_app(app)


@pytest.fixture
def succeeded(pipeline):
    """A file task that succeeded: processed.txt and metadata.json."""
    upload(pipeline, "notes.txt", b"line one\nline two\n")
    (task_id,) = publish_tasks(pipeline, [("file_processing", {"filename": "notes.txt"})])
    drain_subscription(pipeline)
    assert status_of(pipeline, task_id).state == "succeeded"
    return task_id


def test_a_succeeded_task_lists_its_outputs_with_sizes_types_and_content_urls(
    client, pipeline, succeeded
):
    response = client.get(f"/tasks/{succeeded}/outputs")

    body = response.get_json()
    assert response.status_code == 200 and body["task_id"] == succeeded
    stored = outputs_of(pipeline, succeeded)
    by_name = {o["name"]: o for o in body["outputs"]}
    assert set(by_name) == set(stored) == {"processed.txt", "metadata.json"}
    for name, output in by_name.items():
        assert output["size"] == len(stored[name])
        assert output["url"] == f"/tasks/{succeeded}/outputs/{name}"
        assert output["uri"].startswith(f"gs://{pipeline.bucket_name}/outputs/{succeeded}/")
    assert by_name["metadata.json"]["content_type"] == "application/json"


def test_an_output_is_served_as_stored_with_safe_headers_and_revalidation(
    client, pipeline, succeeded
):
    url = f"/tasks/{succeeded}/outputs/processed.txt"

    response = client.get(url)
    again = client.get(url, headers={"If-None-Match": response.headers["ETag"]})

    assert response.status_code == 200
    assert response.data == outputs_of(pipeline, succeeded)["processed.txt"]
    assert response.headers["Content-Length"] == str(len(response.data))
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Disposition"] == "inline; filename*=UTF-8''processed.txt"
    assert response.headers["Content-Security-Policy"].startswith("sandbox")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert again.status_code == 304 and again.data == b""


def test_a_large_output_streams_in_chunks_and_arrives_whole(
    client, pipeline, succeeded, monkeypatch
):
    monkeypatch.setattr(outputs_route, "CHUNK_BYTES", 5)
    expected = outputs_of(pipeline, succeeded)["metadata.json"]

    response = client.get(f"/tasks/{succeeded}/outputs/metadata.json")

    assert response.is_streamed
    assert response.data == expected and len(expected) > 5 * 3
    assert response.headers["Content-Disposition"].startswith("inline")


def test_only_the_generation_the_record_names_is_served(client, pipeline, succeeded):
    record = status_of(pipeline, succeeded)
    (output,) = [o for o in record.outputs if o.name == "processed.txt"]
    name = output.uri.split("/", 3)[3]
    bucket = make_bucket(pipeline, storage_client(pipeline))
    bucket.blob(name).upload_from_string(b"someone else's bytes", content_type="text/plain")

    response = client.get(f"/tasks/{succeeded}/outputs/processed.txt")

    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "output_gone"


def test_unknown_tasks_are_404_and_unfinished_ones_409_naming_their_state(client, pipeline):
    accepted = client.post(
        "/submit-task", json={"task_type": "data_transformation", "dataset_size": 3}
    )
    task_id = accepted.get_json()["task_id"]

    unfinished = client.get(f"/tasks/{task_id}/outputs")
    unknown = client.get("/tasks/no-such-task/outputs")
    content = client.get(f"/tasks/{task_id}/outputs/results.json")

    assert unfinished.status_code == 409
    error = unfinished.get_json()["error"]
    assert error["code"] == "task_not_succeeded"
    assert error["details"] == [{"task_id": task_id, "state": "queued"}]
    assert unknown.status_code == 404 and content.status_code == 409
    assert client.get("/tasks/bad id/outputs").status_code == 400


def test_an_unknown_output_name_is_404(client, succeeded):
    response = client.get(f"/tasks/{succeeded}/outputs/../status/{succeeded}.json")

    assert response.status_code == 404
    assert client.get(f"/tasks/{succeeded}/outputs/nothing.txt").status_code == 404


def test_outputs_need_the_submit_key_and_an_admin_key_is_not_one(client, succeeded):
    for headers in ({"X-API-Key": ""}, {"X-API-Key": ADMIN_KEY}):
        for path in ("outputs", "outputs/processed.txt"):
            response = client.get(f"/tasks/{succeeded}/{path}", headers=headers)
            assert response.status_code == 401, (headers, path)


def test_task_client_lists_and_downloads_outputs(keyed, pipeline, succeeded):
    with served_api(keyed) as url, TaskClient(url, api_key=SUBMIT_KEY, retries=0) as tasks:
        listed = tasks.outputs(succeeded)
        downloaded = {o.name: tasks.download(succeeded, o.name) for o in listed}
        with pytest.raises(TaskNotFoundError):
            tasks.outputs("never-submitted")
        queued = tasks.submit("data_transformation", dataset_size=2)
        with pytest.raises(TaskConflictError):
            tasks.outputs(queued.task_id)

    assert downloaded == outputs_of(pipeline, succeeded)
    assert all(o.url.startswith(url + "/tasks/") for o in listed)


def test_output_names_with_folders_and_odd_characters_round_trip(keyed, pipeline):
    name = "reports/q1 summary?#%.csv"
    task_id = "odd-names-task"
    bucket = make_bucket(pipeline, storage_client(pipeline))
    blob = bucket.blob(f"outputs/{task_id}/run-1/{name}")
    blob.upload_from_string(b"a,b\n1,2\n", content_type="text/csv", if_generation_match=0)
    StatusStore(bucket).create(
        TaskStatus(
            task_id=task_id,
            task_type="data_transformation",
            state=TaskState.SUCCEEDED,
            outputs=[
                OutputRef(
                    name=name,
                    uri=f"gs://{pipeline.bucket_name}/{blob.name}",
                    size=8,
                    content_type="text/csv",
                    generation=blob.generation,
                )
            ],
        )
    )

    with served_api(keyed) as url, TaskClient(url, api_key=SUBMIT_KEY, retries=0) as tasks:
        (listed,) = tasks.outputs(task_id)
        content = tasks.download(task_id, name)

    assert listed.name == name and listed.url.endswith("/reports/q1%20summary%3F%23%25.csv")
    assert content == b"a,b\n1,2\n"


def test_taskctl_lists_a_tasks_outputs_and_saves_one(keyed, pipeline, succeeded, tmp_path):
    saved = tmp_path / "processed.txt"
    with served_api(keyed) as url:
        env = {"TASK_API_URL": url, "TASK_API_KEY": SUBMIT_KEY}
        listed = CliRunner().invoke(cli_main, ["tasks", "outputs", succeeded], env=env)
        printed = CliRunner().invoke(
            cli_main, ["tasks", "outputs", succeeded, "metadata.json"], env=env
        )
        written = CliRunner().invoke(
            cli_main, ["tasks", "outputs", succeeded, "processed.txt", "-o", str(saved)], env=env
        )
        missing = CliRunner().invoke(
            cli_main, ["tasks", "outputs", succeeded, "nothing.txt"], env=env
        )

    stored = outputs_of(pipeline, succeeded)
    assert listed.exit_code == 0, listed.output
    names = sorted(line.split()[0] for line in listed.stdout.splitlines())
    assert names == ["metadata.json", "processed.txt"]
    assert f"{len(stored['metadata.json'])} bytes  application/json" in listed.stdout
    assert printed.exit_code == 0 and printed.stdout_bytes == stored["metadata.json"]
    assert written.exit_code == 0 and saved.read_bytes() == stored["processed.txt"]
    assert missing.exit_code != 0 and "nothing.txt" in missing.output
