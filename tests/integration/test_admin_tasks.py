"""The admin API's tasks and overview: pages from the journal, depth from the record, the
hour from the writers' stats, the backlog from Pub/Sub's numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from background_worker.worker import drain_subscription
from task_api import close_app, create_app
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.journal import Journal
from taskcore.status import StatusStore, TaskState, TaskStatus
from tests.integration.dlq_helpers import seed_dead_letters
from tests.integration.helpers import publish_tasks, upload

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-tasks-key"
SUBMIT_KEY = "admin-tasks-submit-key"


@pytest.fixture
def admin(pipeline):
    settings = pipeline.replace(
        admin_api_keys=frozenset({ADMIN_KEY}), api_keys=frozenset({SUBMIT_KEY})
    )
    app = create_app(settings)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = ADMIN_KEY
    yield client
    close_app(app)


def write_records(settings, records: list[TaskStatus]) -> None:
    """Create records through a journaled store, as the API and the worker do, and flush."""
    bucket = make_bucket(settings, storage_client(settings))
    journal = Journal(bucket, "test-writer")
    store = StatusStore(bucket, on_written=journal.written)
    for record in records:
        store.create(record)
    journal.close()


def record(task_id: str, state: TaskState, seconds_ago: int, **fields) -> TaskStatus:
    return TaskStatus(
        task_id=task_id,
        task_type="data_transformation",
        state=state,
        # Relative to the write, as real records are (the journal files entries by when
        # they were written; a page reads a couple of minutes around its cursor).
        updated_at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
        **fields,
    )


def test_tasks_page_by_status_newest_first_with_a_cursor(admin, pipeline):
    write_records(
        pipeline,
        [record(f"ok-{i}", TaskState.SUCCEEDED, 100 - i) for i in range(5)]
        + [record("dead", TaskState.DEAD_LETTERED, 50, payload={"secret": "x" * 100})],
    )

    first = admin.get("/admin/tasks?limit=2").get_json()
    second = admin.get(f"/admin/tasks?limit=2&cursor={first['next_cursor']}").get_json()
    dead = admin.get("/admin/tasks?status=dead_lettered").get_json()

    assert [t["task_id"] for t in first["tasks"]] == ["dead", "ok-4"]
    assert [t["task_id"] for t in second["tasks"]] == ["ok-3", "ok-2"]
    assert [t["task_id"] for t in dead["tasks"]] == ["dead"] and dead["next_cursor"] is None
    assert "payload" not in dead["tasks"][0] and "history" not in dead["tasks"][0]
    assert admin.get("/admin/tasks?status=bogus").status_code == 400
    assert admin.get("/admin/tasks?cursor=nonsense").get_json()["error"]["code"] == (
        "invalid_cursor"
    )
    assert admin.get("/admin/tasks?limit=0").status_code == 400


def test_a_task_in_depth_has_payload_history_errors_and_outputs_to_download(admin, pipeline):
    upload(pipeline, "in.txt", b"alpha beta\n")
    (task_id,) = publish_tasks(pipeline, [("file_processing", {"filename": "in.txt"})])
    drain_subscription(pipeline)

    body = admin.get(f"/admin/tasks/{task_id}").get_json()
    by_name = {o["name"]: o for o in body["outputs"]}
    content = admin.get(by_name["processed.txt"]["url"])
    public = admin.get(f"/tasks/{task_id}/outputs", headers={"X-API-Key": SUBMIT_KEY})

    assert body["task"]["payload"] == {"filename": "in.txt"}
    assert body["task"]["history"][-1]["state"] == "succeeded"
    assert body["task"]["attempts"] == 1
    assert by_name["processed.txt"]["url"].startswith(f"/admin/tasks/{task_id}/outputs/")
    assert content.status_code == 200 and content.data.startswith(b"alpha beta")
    assert public.status_code == 200, "the submit key's door stays as it was"
    assert admin.get("/admin/tasks/unknown-task").status_code == 404
    failed = seed_dead_letters(pipeline, 1)[0]
    assert admin.get(f"/admin/tasks/{failed}/outputs/x").status_code in (404, 409)


def test_overview_charts_the_hour_and_counts_what_runs_from_the_journal(admin, pipeline):
    upload(pipeline, "in.txt", b"x\n")
    publish_tasks(
        pipeline,
        [("data_transformation", {"dataset_size": 3})] * 3
        + [("file_processing", {"filename": "absent.txt"})],
    )
    drain_subscription(pipeline)

    overview = admin.get("/admin/overview").get_json()

    assert overview["last_hour"]["by_state"]["succeeded"] == 3
    assert overview["last_hour"]["by_state"]["dead_lettered"] == 1
    assert overview["last_hour"]["failure_rate"] == 0.25
    assert len(overview["minutes"]) == 60
    assert sum(m["succeeded"] for m in overview["minutes"]) == 3
    assert overview["running_now"] == 0, "the execution closed: it runs nothing"


def test_overview_backlog_is_pubsubs_own_count_per_subscription(admin, pipeline):
    if not pipeline.monitoring_emulator_host:
        pytest.skip("Google's Pub/Sub emulator has no metrics: TASKCTL_PUBSUB_EMULATOR=python")
    publish_tasks(pipeline, [("data_transformation", {"dataset_size": 3})] * 4)
    seed_dead_letters(pipeline, 2)

    backlog = admin.get("/admin/overview").get_json()["backlog"]

    assert backlog["available"] is True and backlog["source"] == "emulator"
    assert backlog["main"]["subscription"] == pipeline.subscription_name
    assert backlog["main"]["undelivered"] == 4
    assert backlog["dlq"]["undelivered"] == 2
    assert backlog["main"]["oldest_unacked_seconds"] >= 0
    assert backlog["main"]["measured_at"]
    (default,) = backlog["queues"]  # the built-in types declare no queue of their own
    assert default["queue"] == "default" and default["undelivered"] == 4


def test_overview_says_when_the_emulator_cannot_tell_the_backlog(pipeline):
    google_like = pipeline.replace(
        admin_api_keys=frozenset({ADMIN_KEY}), monitoring_emulator_host=None
    )
    app = create_app(google_like)
    try:
        backlog = (
            app.test_client()
            .get("/admin/overview", headers={"X-API-Key": ADMIN_KEY})
            .get_json()["backlog"]
        )
    finally:
        close_app(app)

    assert backlog["available"] is False and backlog["source"] == "unavailable"
    assert "not available from this emulator" in backlog["detail"]
    assert "undelivered" not in backlog["main"], "never a guess"
