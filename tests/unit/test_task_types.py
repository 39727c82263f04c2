"""Task types validate payloads; the envelope round-trips and rejects poison precisely."""

from __future__ import annotations

import json

import pytest

from taskcore.envelope import build_envelope, parse_message, peek_task_fields
from taskcore.errors import InvalidTaskError
from taskcore.payloads import check_object_name
from tests.registries import builtin_registry


@pytest.fixture
def registry():
    return builtin_registry()


def test_unknown_task_type_lists_known_types(registry):
    with pytest.raises(InvalidTaskError) as info:
        registry.validate_payload("video_encoding", {})
    assert info.value.error_type == "unknown_task_type"
    assert "data_transformation" in str(info.value) and "file_processing" in str(info.value)


def test_field_errors_name_each_bad_field(registry):
    with pytest.raises(InvalidTaskError) as info:
        registry.validate_payload(
            "data_transformation", {"dataset_size": -1, "transformation": "explode"}
        )
    fields = {d["field"] for d in info.value.details}
    assert fields == {"dataset_size", "transformation"}
    assert info.value.error_type == "schema_violation"


def test_unknown_fields_are_rejected_not_dropped(registry):
    with pytest.raises(InvalidTaskError) as info:
        registry.validate_payload("file_processing", {"filename": "a.txt", "colour": "red"})
    assert info.value.details[0]["field"] == "colour"


def test_recipe_spelling_aggregation_is_accepted(registry):
    payload = registry.validate_payload("data_transformation", {"transformation": "aggregation"})
    assert payload.transformation == "aggregate"


def test_filter_needs_a_condition(registry):
    with pytest.raises(InvalidTaskError):
        registry.validate_payload("data_transformation", {"transformation": "filter"})


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "a/../b", "/abs", "a\x00b", "x" * 1000, "", "a//b", "a\\b"]
)
def test_unsafe_object_names_are_refused(name):
    with pytest.raises(ValueError):
        check_object_name(name)


def test_file_task_source_uri_must_be_gs(registry):
    with pytest.raises(InvalidTaskError):
        registry.validate_payload("file_processing", {"source_uri": "http://example.com/x"})


def test_envelope_round_trips_through_a_message(registry):
    envelope, _ = build_envelope(registry, "file_processing", {"filename": "report.csv"})
    data, attributes = envelope.to_message()
    assert attributes["task_id"] == envelope.task_id
    assert attributes["task_type"] == "file_processing"
    parsed, payload = parse_message(registry, data, attributes)
    assert parsed.task_id == envelope.task_id
    assert payload.filename == "report.csv"


def test_recipe_flat_message_shape_is_understood(registry):
    data = json.dumps({"task_type": "file_processing", "filename": "a.txt"}).encode()
    first, payload = parse_message(registry, data, {}, message_id="123")
    redelivered, _ = parse_message(registry, data, {}, message_id="123")
    next_cron_run, _ = parse_message(registry, data, {}, message_id="456")
    assert payload.filename == "a.txt"
    # No task_id: one task per publish, stable across redeliveries of that publish.
    assert first.task_id == redelivered.task_id == "msg-123"
    assert next_cron_run.task_id != first.task_id


@pytest.mark.parametrize(
    ("data", "error_type"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"payload": {}}', "missing_task_type"),
        (b'{"task_type": "nope", "payload": {}}', "unknown_task_type"),
        (
            b'{"task_type": "data_transformation", "payload": {"dataset_size": "many"}}',
            "schema_violation",
        ),
        (b"\xff\xfe\xfd", "invalid_utf8"),
        (b'{"task_type": "file_processing", "task_id": "../x", "payload": {}}', "invalid_envelope"),
    ],
)
def test_poison_bodies_raise_invalid_task_with_precise_type(registry, data, error_type):
    with pytest.raises(InvalidTaskError) as info:
        parse_message(registry, data, {})
    assert info.value.error_type == error_type


def test_peek_finds_task_fields_in_attributes_or_body():
    assert peek_task_fields(b"garbage", {"task_id": "t1"}) == {"task_id": "t1"}
    body = json.dumps({"task_id": "t2", "task_type": "x"}).encode()
    assert peek_task_fields(body, {}) == {"task_id": "t2", "task_type": "x"}
