"""Every log filter in infra/ and every documented log query speaks taskcore.events.

Log-based metrics, the failure alert and the queries operators copy from the docs select log
lines by `jsonPayload.event` and read their fields. A value the code does not emit makes a
metric count nothing, silently. These tests read every such filter and hold it to Event and
EVENT_FIELDS; tests/integration/test_log_events.py runs the worker and applies the same
filters to its real lines.
"""

from __future__ import annotations

import pytest
from infra_contract import INFRA, Terraform
from log_queries import (
    DOCUMENTS,
    METRIC_EVENTS,
    Comparison,
    documented_queries,
    event_values,
    extracted_field,
    mentioned_event_filters,
    parse_query,
    payload_fields,
)

from taskcore.events import EVENT_FIELDS, Event
from taskcore.settings import Settings

TERRAFORM_FILES = sorted(INFRA.glob("*.tf"))
# Fields on every line whatever its event: the message, and the Cloud Run execution labels.
EVERY_LINE = {"event", "message", *Settings().execution_labels()}
KNOWN_FIELDS = EVERY_LINE | {field for fields in EVENT_FIELDS.values() for field in fields}


def metric(tf: Terraform, name: str) -> dict:
    assert ("google_logging_metric", name) in tf.resources, f"no google_logging_metric.{name}"
    return tf.resources[("google_logging_metric", name)]


def test_every_event_filter_in_infra_and_docs_names_an_event_the_code_emits():
    seen = {}
    for path in [*TERRAFORM_FILES, *DOCUMENTS]:
        values = mentioned_event_filters(path.read_text())
        unknown = values - {e.value for e in Event}
        assert not unknown, (
            f"{path.name} filters on {sorted(unknown)}, which the code never logs "
            "(shared/taskcore/events.py: Event)"
        )
        seen[path.name] = values
    # The scan itself must see the filters it is there to check.
    assert seen["monitoring.tf"] >= {Event.TASK_SUCCEEDED, Event.TASK_RETRIED}
    assert seen["deploy.md"], "docs/deploy.md documents no event query"


def test_the_event_scan_catches_a_misspelt_event():
    text = 'filter = "x AND jsonPayload.event=\\"task_failed\\""\njsonPayload.event=("a" OR "b")'
    assert mentioned_event_filters(text) == {"task_failed", "a", "b"}


def test_every_log_metric_states_what_it_counts(tf: Terraform):
    assert set(tf.of_type("google_logging_metric")) == set(METRIC_EVENTS), (
        "a new log-based metric states its events in tests/infra/log_queries.py METRIC_EVENTS"
    )


@pytest.mark.parametrize("name", sorted(METRIC_EVENTS))
def test_metric_filter_selects_exactly_its_events_in_the_worker_logs(tf: Terraform, name):
    query = parse_query(tf.interpolate(metric(tf, name)["filter"]))
    assert event_values(query) == set(METRIC_EVENTS[name])
    top = query.operands if query.op == "AND" else (query,)
    jobs = tuple(queue["job_name"] for queue in tf.local_value("queues").values())
    assert Comparison("resource.type", "=", ("cloud_run_job",)) in top
    # Every queue's worker job, and only those.
    assert Comparison("resource.labels.job_name", "=", jobs) in top


@pytest.mark.parametrize("name", sorted(METRIC_EVENTS))
def test_metric_reads_only_fields_its_events_carry(tf: Terraform, name):
    body = metric(tf, name)
    events = METRIC_EVENTS[name]
    # A label may be empty on some lines (a dead letter of a body that is not JSON has no
    # task_type); a value or a numeric condition must be on every line it counts.
    sometimes = {"event"}.union(*(EVENT_FIELDS[e] for e in events))
    always = {"event"}.union(frozenset.intersection(*(EVENT_FIELDS[e] for e in events)))
    labels = body.get("label_extractors", {})
    for label, extractor in labels.items():
        assert extracted_field(extractor) in sometimes, f"{name}: label {label} = {extractor}"
    if body.get("value_extractor"):
        assert extracted_field(body["value_extractor"]) in always, body["value_extractor"]
    query = parse_query(tf.interpolate(body["filter"]))
    assert payload_fields(query) <= always, f"{name} filters on fields some lines lack"
    declared = {label["key"] for label in body["metric_descriptor"][0].get("labels", [])}
    assert declared == set(labels), f"{name}: descriptor labels and extractors differ"


def test_documented_queries_use_events_and_fields_the_code_logs():
    queries = documented_queries([*DOCUMENTS, *TERRAFORM_FILES])
    assert len(queries) >= 4, "the docs, alerts and outputs lost their log queries"
    for documented in queries:
        query = parse_query(documented.query)
        unknown_events = event_values(query) - {e.value for e in Event}
        assert not unknown_events, f"{documented}: unknown events {sorted(unknown_events)}"
        unknown_fields = payload_fields(query) - KNOWN_FIELDS
        assert not unknown_fields, f"{documented}: no line carries {sorted(unknown_fields)}"


def test_failure_alert_counts_the_failure_metric(tf: Terraform):
    watched = {}
    for name, policy in tf.of_type("google_monitoring_alert_policy").items():
        for condition in policy["conditions"]:
            for key in tf.instance_keys(policy):
                text = tf.interpolate(condition["condition_threshold"][0]["filter"], key)
                query = parse_query(text)
                for c in query.operands if query.op == "AND" else (query,):
                    if c.field == "metric.type" and c.values[0].startswith(
                        "logging.googleapis.com/"
                    ):
                        watched[name] = c.values[0].removeprefix("logging.googleapis.com/user/")
    metric_names = {m["name"]: n for n, m in tf.of_type("google_logging_metric").items()}
    for policy, metric_name in watched.items():
        assert metric_name in metric_names, f"{policy} watches {metric_name}, which is no metric"
    assert "tasks_failed" in {metric_names[m] for m in watched.values()}, (
        "no alert watches the failed-attempts metric"
    )
