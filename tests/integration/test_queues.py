"""Queues: a task type's queue is its own topic and subscription, drained by its own workers."""

from __future__ import annotations

import json

import pytest

from background_worker.worker import drain_subscription
from taskcore.bootstrap import bootstrap
from tests.integration.dlq_helpers import dlq_json, taskctl
from tests.integration.helpers import publish_tasks, pull_all, status_of

pytestmark = pytest.mark.integration

MODULES = ("example_tasks", "tests.task_modules.urgent")


@pytest.fixture
def queued(settings):
    """Settings with an `urgent` queue declared, bootstrapped."""
    settings = settings.replace(task_modules=MODULES)
    report = bootstrap(settings)
    assert settings.subscription_path_for("urgent") in report.created
    return settings


def test_a_task_goes_to_its_types_queue_and_only_that_queues_workers_run_it(queued):
    (urgent,) = publish_tasks(queued, [("page_someone", {"who": "alice"})])
    (ordinary,) = publish_tasks(queued, [("data_transformation", {"dataset_size": 3})])

    default_run = drain_subscription(queued)
    urgent_run = drain_subscription(queued.replace(queue="urgent"))

    assert default_run.outcomes["succeeded"] == 1 and default_run.received == 1
    assert urgent_run.outcomes["succeeded"] == 1 and urgent_run.received == 1
    assert status_of(queued, urgent).state == "succeeded"
    assert status_of(queued, ordinary).state == "succeeded"


def test_a_dead_letter_of_a_queue_is_replayed_back_to_that_queue(queued):
    (task_id,) = publish_tasks(queued, [("page_someone", {"fail": True})])
    assert drain_subscription(queued.replace(queue="urgent")).outcomes["dead_lettered"] == 1
    letter = dlq_json(queued)["dead_letters"][0]
    assert letter["source_subscription"] == queued.subscription_path_for("urgent")

    result = taskctl(queued, "dlq", "replay", "--task-id", task_id, "--yes")

    assert result.exit_code == 0, result.output
    assert pull_all(queued, queued.subscription_path_for("default"), wait=1) == []
    (back,) = pull_all(queued, queued.subscription_path_for("urgent"))
    assert back.message.attributes["task_id"] == task_id
    assert back.message.attributes["queue"] == "urgent"


def test_taskctl_queues_shows_each_queues_backlog(queued):
    if not queued.monitoring_emulator_host:
        pytest.skip("Google's Pub/Sub emulator has no metrics: TASKCTL_PUBSUB_EMULATOR=python")
    publish_tasks(queued, [("page_someone", {"who": "alice"})] * 3)
    publish_tasks(queued, [("data_transformation", {"dataset_size": 3})])

    listing = taskctl(queued, "queues", "--json")
    table = taskctl(queued, "queues")

    assert listing.exit_code == 0, listing.output
    shown = {q["queue"]: q for q in json.loads(listing.stdout)["queues"]}
    assert list(shown) == ["default", "urgent"], "the default queue first"
    assert shown["urgent"]["undelivered"] == 3 and shown["default"]["undelivered"] == 1
    assert shown["urgent"]["subscription"] == queued.subscription_name_for("urgent")
    assert shown["urgent"]["task_types"] == ["page_someone"]
    assert table.exit_code == 0
    urgent_line = next(line for line in table.output.splitlines() if line.startswith("urgent"))
    assert urgent_line.split()[1] == "3"
