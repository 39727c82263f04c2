"""The real log lines are what the metrics, alerts and documented queries read.

One worker execution (`python -m taskctl worker`, as the Cloud Run job runs it) drains a
success, a task that times out (retried) and a task whose input is missing (dead-lettered)
from the emulators; the API (gunicorn) accepts a task. Their stdout is read as Cloud Logging
would store it, and every log-based metric of infra/monitoring.tf and every documented query
is run on those entries: each must select exactly the lines it was written for, with the
fields it extracts.
"""

from __future__ import annotations

import pytest
import requests

from taskcore.bootstrap import bootstrap
from taskcore.events import EVENT_FIELDS, FAILURE_EVENTS, Event
from tests.conftest import make_test_settings
from tests.infra.infra_contract import INFRA, Terraform
from tests.infra.log_queries import (
    DOCUMENTS,
    METRIC_EVENTS,
    documented_queries,
    entry_from_line,
    event_values,
    extracted_field,
    json_lines,
    lookup,
    parse_query,
)
from tests.integration.api_process import running_api
from tests.integration.helpers import publish_tasks, upload
from tests.integration.worker_process import run_worker_execution

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tf() -> Terraform:
    return Terraform.load(INFRA)


@pytest.fixture(scope="module")
def logs(pubsub_emulator, gcs_emulator, tf, artifacts_dir):
    """The API accepts one task, then one worker execution runs it and two others.

    Returns the worker's entries, the API's entries, and the tasks' ids by outcome.
    """
    pipeline = make_test_settings()
    bootstrap(pipeline)
    with running_api(pipeline, artifacts_dir) as api:
        task = {"task_type": "data_transformation", "dataset_size": 10}
        response = requests.post(f"{api.url}/submit-task", json=task, timeout=30)
        assert response.status_code == 202, response.text
    succeeded = response.json()["task_id"]
    upload(pipeline, "report.txt", b"hello\n")
    timed_out, missing = publish_tasks(
        pipeline,
        [
            # Sleeps past TASK_TIMEOUT_SECONDS below: a transient failure, retried.
            ("file_processing", {"filename": "report.txt", "processing_time": 5}),
            ("file_processing", {"filename": "absent.txt"}),
        ],
    )
    settings = pipeline.replace(task_timeout_seconds=1, run_budget_seconds=30)
    run = run_worker_execution(settings, artifacts_dir / "log-events-worker.log")
    worker = {"type": "cloud_run_job", "labels": {"job_name": tf.default("worker_job_name")}}
    service = {
        "type": "cloud_run_revision",
        "labels": {"service_name": tf.default("api_service_name")},
    }
    worker_entries = [entry_from_line(line, worker) for line in json_lines(run.stdout)]
    api_entries = [entry_from_line(line, service) for line in json_lines(api.log())]
    assert worker_entries and api_entries, "no JSON log lines"
    ids = {"succeeded": succeeded, "timed_out": timed_out, "missing": missing}
    return worker_entries, api_entries, ids


@pytest.fixture(scope="module")
def execution(logs):
    """The worker's entries and the tasks' ids."""
    worker_entries, _, ids = logs
    return worker_entries, ids


def events_of(entries) -> list[str]:
    return [e["jsonPayload"]["event"] for e in entries if "event" in e["jsonPayload"]]


def outcome(entries, task_id: str) -> list[dict]:
    return [e["jsonPayload"] for e in entries if e["jsonPayload"].get("task_id") == task_id]


def test_each_outcome_is_one_line_with_its_event_and_fields(execution):
    entries, ids = execution
    assert set(events_of(entries)) <= {e.value for e in Event}
    for entry in entries:
        payload = entry["jsonPayload"]
        if "event" in payload:
            missing = EVENT_FIELDS[Event(payload["event"])] - set(payload)
            assert not missing, f"{payload['event']} line lacks {sorted(missing)}: {payload}"

    (done,) = [p for p in outcome(entries, ids["succeeded"]) if "event" in p]
    assert done["event"] == Event.TASK_SUCCEEDED and done["duration_ms"] >= 0
    assert done["task_type"] == "data_transformation"

    retried = [p for p in outcome(entries, ids["timed_out"]) if p.get("event")]
    assert retried and retried[0]["event"] == Event.TASK_RETRIED, retried
    assert retried[0]["error_type"] == "timeout" and retried[0]["duration_ms"] >= 1000

    (dead,) = [p for p in outcome(entries, ids["missing"]) if "event" in p]
    assert dead["event"] == Event.TASK_DEAD_LETTERED and dead["error_type"] == "missing_input"
    assert [e for e in events_of(entries) if e == Event.EXECUTION_SUMMARY], "no summary line"


@pytest.mark.parametrize("name", sorted(METRIC_EVENTS))
def test_log_metric_counts_exactly_its_lines(execution, tf, name):
    entries, _ = execution
    metric = tf.resources[("google_logging_metric", name)]
    query = parse_query(tf.interpolate(metric["filter"]))
    matched = [e for e in entries if query.matches(e)]
    assert set(events_of(matched)) == set(METRIC_EVENTS[name]), (
        f"{name} matched {events_of(matched)} among {events_of(entries)}"
    )
    wanted = [e for e in entries if e["jsonPayload"].get("event") in METRIC_EVENTS[name]]
    assert len(matched) == len(wanted), f"{name} misses lines it should count"
    for entry in matched:
        for label, extractor in metric.get("label_extractors", {}).items():
            found, value = lookup(entry, f"jsonPayload.{extracted_field(extractor)}")
            assert found and value not in ("", None), f"{name}: no {label} in {entry}"
        if metric.get("value_extractor"):
            found, value = lookup(
                entry, f"jsonPayload.{extracted_field(metric['value_extractor'])}"
            )
            assert found and isinstance(value, int | float), f"{name}: no value in {entry}"


def test_api_accepts_a_task_in_one_line_with_its_fields(logs):
    _, api_entries, ids = logs
    (accepted,) = [e["jsonPayload"] for e in api_entries if e["jsonPayload"].get("event")]
    assert accepted["event"] == Event.TASK_ACCEPTED and accepted["task_id"] == ids["succeeded"]
    assert EVENT_FIELDS[Event.TASK_ACCEPTED] <= set(accepted), accepted


def test_documented_queries_find_the_lines_they_promise(logs, tf):
    worker_entries, api_entries, ids = logs
    entries = worker_entries + api_entries
    checked = 0
    for documented in documented_queries([*DOCUMENTS, *sorted(INFRA.glob("*.tf"))]):
        text = tf.interpolate(documented.query).replace("<task_id>", ids["succeeded"])
        query = parse_query(text)
        matched = [e for e in entries if query.matches(e)]
        assert matched, f"{documented} matches none of the lines"
        wanted = event_values(query)
        if wanted:
            assert set(events_of(matched)) == wanted, f"{documented} matched {events_of(matched)}"
        if "<task_id>" in documented.query:
            # "One task, across the API and the worker."
            sources = {e["resource"]["type"] for e in matched}
            assert sources == {"cloud_run_job", "cloud_run_revision"}, sources
        checked += 1
    assert checked >= 5, "the docs lost their log queries"


def test_failure_queries_select_the_failure_events(execution, tf):
    """The alert's query and the guide's 'Failures only' both read task_retried and task_dead_lettered."""
    failures = {e.value for e in FAILURE_EVENTS}
    queries = [
        q
        for q in documented_queries([*DOCUMENTS, INFRA / "monitoring.tf"])
        if event_values(parse_query(q.query)) == failures
    ]
    assert len(queries) >= 2, "the guide and the failure alert each show the failures query"


def test_an_idle_execution_prints_one_short_line(pubsub_emulator, gcs_emulator, artifacts_dir):
    pipeline = make_test_settings(idle_timeout_seconds=0.5)
    bootstrap(pipeline)

    run = run_worker_execution(pipeline, artifacts_dir / "idle-worker.log")

    (line,) = run.stdout.splitlines()
    assert len(line) < 300, line
    assert entry_from_line(json_lines(line)[0], {})["jsonPayload"]["event"] == "execution_summary"
    assert run.stderr == ""
