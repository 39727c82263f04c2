"""Dead letters without Pub/Sub: what they say, how filters pick them, what a replay publishes."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from taskcore.deadletter import REFRESH_ATTRIBUTES, dead_letter_attributes
from taskcore.dlq.audit import Actor, key_id
from taskcore.dlq.letters import DeadLetter, DeadLetterFilter, merge_copies, parse_since, select
from taskcore.dlq.replay import (
    RateLimiter,
    parse_rate,
    patch_body,
    prepare,
    replacement_task_id,
    replay_attributes,
)
from taskcore.errors import InvalidTaskError
from taskcore.status import TaskState, TaskStatus
from tests.registries import builtin_registry

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ENVELOPE = {"task_id": "t1", "task_type": "data_transformation", "payload": {"dataset_size": 0}}


def worker_letter(message_id="1", body=ENVELOPE, failed_at=NOW, **reason) -> DeadLetter:
    attributes = dead_letter_attributes(
        {"task_id": body.get("task_id", ""), "schema_version": "1"} if body.get("task_id") else {},
        error_type=reason.get("error_type", "schema_violation"),
        error_message=reason.get("error_message", "dataset_size: too small"),
        delivery_attempt=1,
        source_subscription="projects/p/subscriptions/worker",
        task_fields={"task_type": body.get("task_type", "")},
    )
    attributes["failed_at"] = failed_at.isoformat()
    return DeadLetter(message_id, f"ack-{message_id}", json.dumps(body).encode(), attributes, NOW)


def pubsub_letter(message_id="2", task_id="t2") -> DeadLetter:
    body = {"task_id": task_id, "task_type": "file_processing", "payload": {}}
    attributes = {
        "task_id": task_id,
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "worker",
        "replay_count": "2",
    }
    return DeadLetter(message_id, "ack", json.dumps(body).encode(), attributes, NOW)


def test_a_worker_dead_letter_reports_the_workers_reason():
    summary = worker_letter().summary()

    assert summary["task_id"] == "t1" and summary["task_type"] == "data_transformation"
    assert summary["error_type"] == "schema_violation"
    assert summary["dead_lettered_by"] == "worker"
    assert summary["source_subscription"] == "projects/p/subscriptions/worker"
    assert summary["dead_lettered_at"] == NOW.isoformat()


def test_a_pubsub_dead_letter_reports_exhaustion_and_the_last_error_from_status():
    letter = pubsub_letter()
    letter.status = TaskStatus(
        task_id="t2",
        task_type="file_processing",
        state=TaskState.RETRYING,
        attempts=5,
        last_error={"type": "timeout", "message": "too slow"},
    )

    summary = letter.summary()

    assert summary["error_type"] == "delivery_attempts_exhausted"
    assert summary["error_message"] == "delivery attempts exhausted; last error: timeout: too slow"
    assert summary["attempts"] == 5 and summary["replay_count"] == 2


def test_an_id_less_dead_letter_is_named_after_its_message_id():
    letter = worker_letter("77", body={"task_type": "data_transformation", "dataset_size": -1})

    assert letter.task_id == "msg-77"
    assert replay_attributes(letter, NOW)["task_id"] == "msg-77"


def test_copies_of_one_death_are_one_dead_letter_the_workers_standing_for_the_rest():
    first = worker_letter("10", failed_at=NOW - timedelta(seconds=5))
    again = worker_letter("11")  # published again by the delivery after a crash
    forwarded = pubsub_letter("12", task_id="t1")
    forwarded.attributes["replay_count"] = "0"  # the same life: Pub/Sub gave up on it too
    next_life = pubsub_letter("13", task_id="t1")  # replay_count 2: another death
    other = worker_letter("14", body={**ENVELOPE, "task_id": "t9"})

    merged = merge_copies([forwarded, again, next_life, first, other])

    assert sorted(letter.message_id for letter in merged) == ["10", "13", "14"]
    (letter,) = [m for m in merged if m.message_id == "10"]
    assert letter.key == "t1#0" and letter.message_ids == ["10", "11", "12"]
    assert letter.summary()["copies"] == 3 and letter.record()["message_ids"] == ["10", "11", "12"]
    assert [m.summary()["copies"] for m in merged if m.message_id != "10"] == [1, 1]
    # Chosen by the id of any copy.
    assert select(merged, DeadLetterFilter(message_ids=frozenset({"12"}))) == [letter]


def test_id_less_dead_letters_are_keyed_by_their_own_message_id():
    body = {"task_type": "data_transformation", "dataset_size": -1}
    one, two = worker_letter("77", body=body), worker_letter("78", body=body)

    assert "dead_letter_key" not in one.attributes
    assert (one.key, two.key) == ("msg-77", "msg-78")
    assert len(merge_copies([one, two])) == 2


def test_a_patched_replay_of_any_copy_is_the_same_new_task():
    sets = [("dataset_size", 3)]
    assert replacement_task_id(worker_letter("10"), sets) == replacement_task_id(
        worker_letter("11"), sets
    )


def test_parse_since_takes_durations_and_iso_times():
    assert parse_since("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_since("7d", now=NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-11-25T10:00:00Z") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert parse_since("2026-11-25T10:00:00") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday")


def test_filters_combine_and_an_empty_filter_selects_nothing_on_its_own():
    old = worker_letter("1", failed_at=NOW - timedelta(days=3))
    new = worker_letter("2", error_type="missing_input", error_message="uploads/x gone")
    other = pubsub_letter("3")

    assert DeadLetterFilter().is_empty and not DeadLetterFilter(everything=True).is_empty
    assert select([new, old, other], DeadLetterFilter(everything=True)) == [old, new, other]
    assert select([old, new], DeadLetterFilter(error="GONE")) == [new]
    assert select([old, new, other], DeadLetterFilter(task_type="file_processing")) == [other]
    since = DeadLetterFilter(since=NOW - timedelta(days=1), everything=True)
    assert select([old, new], since) == [new]
    assert select([old, new, other], DeadLetterFilter(everything=True), limit=1) == [old]
    assert DeadLetterFilter.from_mapping({"task_ids": "a,b", "all": True}).describe() == {
        "all": True,
        "task_ids": ["a", "b"],
    }
    with pytest.raises(ValueError):
        DeadLetterFilter.from_mapping({"task_ids": [1]})


def test_replay_attributes_drop_the_reason_and_count_the_replay():
    attributes = replay_attributes(pubsub_letter(), NOW)

    assert attributes == {"task_id": "t2", "replay_count": "3", "replayed_at": NOW.isoformat()}
    letter = worker_letter()
    letter.attributes.update(dict.fromkeys(REFRESH_ATTRIBUTES, "3"))  # it had been re-published
    worker = replay_attributes(letter, NOW)
    assert set(worker) == {"task_id", "task_type", "schema_version", "replay_count", "replayed_at"}


def test_patch_body_sets_payload_fields_in_envelopes_and_flat_bodies():
    envelope = json.loads(patch_body(json.dumps(ENVELOPE).encode(), [("dataset_size", 3)]))
    flat = json.loads(patch_body(b'{"task_type": "x", "a": 1}', [("filter.value", 2)]))

    assert envelope["payload"] == {"dataset_size": 3} and envelope["task_id"] == "t1"
    assert flat == {"task_type": "x", "a": 1, "filter": {"value": 2}}
    with pytest.raises(InvalidTaskError):
        patch_body(b"\xff not json", [("a", 1)])


def test_prepare_refuses_a_patch_that_leaves_the_task_invalid():
    letters = [worker_letter()]
    registry = builtin_registry()

    fixed = prepare(letters, [("dataset_size", 4)], registry, NOW)
    refused = prepare(letters, [("dataset_size", -4)], registry, NOW)

    assert (
        fixed.problems == [] and json.loads(fixed.prepared[0].data)["payload"]["dataset_size"] == 4
    )
    assert refused.problems[0]["task_id"] == "t1"
    assert "dataset_size" in refused.problems[0]["error"]


def test_a_patched_replay_runs_as_a_new_task_linked_to_the_original():
    plan = prepare([worker_letter()], [("dataset_size", 4)], builtin_registry(), NOW)
    (item,) = plan.prepared
    again = prepare([worker_letter()], [("dataset_size", 4)], builtin_registry(), NOW).prepared[0]

    assert item.new_task_id and item.new_task_id != "t1"
    assert item.attributes["task_id"] == item.new_task_id and item.attributes["replay_of"] == "t1"
    assert json.loads(item.data)["task_id"] == item.new_task_id
    assert again.new_task_id == item.new_task_id, "the same replay, repeated, is one task"


def test_a_plain_replay_of_a_task_that_succeeded_is_skipped_and_said_so():
    letter = worker_letter()
    letter.status = TaskStatus(task_id="t1", task_type="data_transformation", state="succeeded")

    plain = prepare([letter], [], builtin_registry(), NOW)
    patched = prepare([letter], [("dataset_size", 4)], builtin_registry(), NOW)

    assert plain.prepared == [] and plain.skipped == [letter]
    assert len(patched.prepared) == 1 and patched.skipped == []


def test_rates_parse_and_pace_calls():
    assert parse_rate("10/s") == 10 and parse_rate("120/m") == 2 and parse_rate("5") == 5
    assert parse_rate(None) is None and parse_rate("0") is None
    with pytest.raises(ValueError):
        parse_rate("fast")
    limiter, stop = RateLimiter(50), threading.Event()
    started = time.monotonic()
    for _ in range(6):
        assert limiter.wait(stop)
    assert time.monotonic() - started >= 5 / 50 - 0.005
    stop.set()
    assert not limiter.wait(stop)


def test_actors_name_keys_by_hash_never_by_value():
    assert key_id("secret") == Actor.api_key("secret").id
    assert "secret" not in key_id("secret") and key_id("secret").startswith("key:")
    assert Actor.os_user().kind == "os_user"
