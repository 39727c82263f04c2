"""Delayed tasks at the API, the tick and periodic firings (/internal/*), and the poke that
starts executions on demand, on fake clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.jobs import ExecutionView, Started
from task_api import create_app
from task_api.routes import internal
from taskcore.settings import Settings
from taskcore.status import utcnow
from tests.unit.api_fakes import FakePublisher, FakeStorage, bucket_of, with_sample_input

WORK = {"task_type": "data_transformation", "dataset_size": 10, "transformation": "normalize"}


def _later(**delta) -> datetime:
    return utcnow() + timedelta(**delta)


def test_a_delayed_task_is_scheduled_not_published(client, publisher):
    answer = client.post("/submit-task", json={**WORK, "delay_seconds": 60})
    assert answer.status_code == 202, answer.json
    body = answer.json
    assert body["status"] == "scheduled" and body["message_id"] is None
    assert datetime.fromisoformat(body["run_at"]) > utcnow() + timedelta(seconds=55)
    assert publisher.envelopes == []
    record = client.get(f"/tasks/{body['task_id']}").json
    assert record["state"] == "scheduled" and record["run_at"] == body["run_at"]


def test_run_at_names_the_moment_and_a_past_run_at_runs_now(client, publisher):
    at = _later(hours=2).isoformat().replace("+00:00", "Z")
    answer = client.post("/submit-task", json={**WORK, "run_at": at})
    assert answer.json["status"] == "scheduled"
    past = client.post("/submit-task", json={**WORK, "run_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 202 and past.json["status"] == "queued"
    assert len(publisher.envelopes) == 1


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"delay_seconds": 31 * 24 * 3600}, "delay_seconds"),
        ({"delay_seconds": True}, "delay_seconds"),
        ({"delay_seconds": "60"}, "delay_seconds"),
        ({"run_at": "tomorrow"}, "run_at"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"run_at": "2099-01-01T00:00:00Z"}, "run_at"),
        ({"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}, "run_at"),
    ],
)
def test_a_bad_delay_is_a_400_that_names_the_field(client, publisher, fields, field):
    answer = client.post("/submit-task", json={**WORK, **fields})
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "invalid_schedule"
    assert answer.json["error"]["details"][0]["field"] == field
    assert publisher.envelopes == []


def test_a_scheduled_task_can_be_cancelled_and_is_then_never_published(app, client, publisher):
    task_id = client.post("/submit-task", json={**WORK, "delay_seconds": 5}).json["task_id"]
    assert client.delete(f"/tasks/{task_id}").status_code == 200
    dispatcher = app.extensions["task_api"].dispatcher
    dispatcher.clock = lambda: _later(seconds=10)
    report = client.post("/internal/tick").json
    assert report["dropped"] == [task_id] and report["published"] == []
    assert publisher.envelopes == []


def test_the_tick_publishes_a_delayed_task_once_it_is_due(app, client, publisher):
    task_id = client.post("/submit-task", json={**WORK, "delay_seconds": 30}).json["task_id"]
    dispatcher = app.extensions["task_api"].dispatcher
    assert client.post("/internal/tick").json["published"] == []
    dispatcher.clock = lambda: _later(seconds=31)
    assert client.post("/internal/tick").json["published"] == [task_id]
    assert [e.task_id for e in publisher.envelopes] == [task_id]
    assert client.get(f"/tasks/{task_id}").json["state"] == "queued"
    assert client.post("/internal/tick").json["published"] == []


def test_a_batch_mixes_delayed_and_immediate_items(client, publisher):
    answer = client.post(
        "/submit-tasks", json={"tasks": [WORK, {**WORK, "delay_seconds": 600}, {**WORK}]}
    )
    assert answer.status_code == 202, answer.json
    assert answer.json["queued"] == 2 and answer.json["scheduled"] == 1
    assert [r["status"] for r in answer.json["results"]] == ["queued", "scheduled", "queued"]
    assert len(publisher.envelopes) == 2


def test_a_delayed_task_with_an_idempotency_key_is_kept_once(client, storage):
    headers = {"Idempotency-Key": "delayed-once"}
    first = client.post("/submit-task", json={**WORK, "delay_seconds": 60}, headers=headers)
    again = client.post("/submit-task", json={**WORK, "delay_seconds": 60}, headers=headers)
    assert first.json["task_id"] == again.json["task_id"]
    assert again.json["status"] == "scheduled"
    kept = [n for n in bucket_of(storage).objects if n.startswith("scheduled/")]
    assert len(kept) == 1


def test_firing_a_type_that_is_not_periodic_is_a_404(client):
    answer = client.post("/internal/fire/data_transformation")
    assert answer.status_code == 404 and answer.json["error"]["code"] == "not_periodic"


# --- who may call /internal/* ------------------------------------------------------------


@pytest.fixture
def guarded(publisher, storage):
    settings = Settings.from_env(
        {}, bucket_name="unit-bucket", scheduler_service_account="tick@p.iam.gserviceaccount.com"
    )
    app = create_app(settings, publisher=publisher, storage=storage)
    yield app.test_client()
    app.extensions["task_api"].close()


def test_internal_routes_refuse_callers_without_the_schedulers_id_token(guarded, monkeypatch):
    assert guarded.post("/internal/tick").status_code == 401

    def forged(token):
        raise ValueError("bad signature")

    monkeypatch.setattr(internal, "verify_google_id_token", forged)
    assert guarded.post("/internal/tick", headers={"Authorization": "Bearer x"}).status_code == 401
    monkeypatch.setattr(
        internal,
        "verify_google_id_token",
        lambda token: {"email": "someone@p.iam.gserviceaccount.com", "email_verified": True},
    )
    answer = guarded.post("/internal/tick", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 403 and answer.json["error"]["code"] == "not_scheduler"
    monkeypatch.setattr(
        internal,
        "verify_google_id_token",
        lambda token: {"email": "tick@p.iam.gserviceaccount.com", "email_verified": True},
    )
    assert guarded.post("/internal/tick", headers={"Authorization": "Bearer x"}).status_code == 200


# --- executions on demand ------------------------------------------------------------------


class RecordingJobs:
    runs: list = []
    broken = False

    def __init__(self, settings) -> None:
        pass

    def run(self, job, task_count, env):
        if RecordingJobs.broken:
            raise RuntimeError("Admin API down")
        RecordingJobs.runs.append((job, task_count, env))
        return Started(f"{job}-x", task_count)

    def executions(self, job):
        now = datetime.now(UTC)
        return [ExecutionView(f"{job}-x", now, count) for _, count, _ in RecordingJobs.runs]

    def close(self):
        pass


@pytest.fixture
def on_demand(monkeypatch):
    import task_api.services

    RecordingJobs.runs = []
    RecordingJobs.broken = False
    monkeypatch.setattr(task_api.services, "JobsGateway", RecordingJobs)
    publisher = FakePublisher()
    settings = Settings.from_env({}, bucket_name="unit-bucket", dispatch_enabled=True)
    app = create_app(settings, publisher=publisher, storage=with_sample_input(FakeStorage()))
    yield app.test_client()
    app.extensions["task_api"].close()


def test_an_accepted_task_starts_an_execution_before_its_202_leaves(on_demand):
    assert on_demand.post("/submit-task", json=WORK).status_code == 202
    assert len(RecordingJobs.runs) == 1
    job, count, env = RecordingJobs.runs[0]
    assert count == 1 and env["QUEUE"] == "default"
    # Within the cooldown, more tasks only note their demand.
    for _ in range(20):
        on_demand.post("/submit-task", json=WORK)
    assert len(RecordingJobs.runs) == 1


def test_a_failing_admin_api_never_fails_a_submission(on_demand):
    RecordingJobs.broken = True
    answer = on_demand.post("/submit-task", json=WORK)
    assert answer.status_code == 202 and answer.json["status"] == "queued"
