"""Copies of one dead letter are one dead letter: listed, counted, replayed and purged once.

A worker that dies between publishing a dead letter and recording it published leaves the
next delivery to publish it again (Pub/Sub has no idempotent publish). Both copies carry the
same dead_letter_key (the task and its life); the DLQ tools go by that key.
"""

from __future__ import annotations

from collections import Counter

import pytest

from taskcore.deadletter import dead_letter
from taskcore.envelope import build_envelope
from taskcore.publishing import Publisher
from tests.integration.dlq_helpers import (
    audit_records,
    dlq_json,
    dlq_task_ids,
    objects,
    seed_dead_letters,
    taskctl,
)
from tests.integration.helpers import publish_raw, pull_all
from tests.registries import builtin_registry

pytestmark = pytest.mark.integration


def dead_letter_twice(settings, fields: dict | None = None) -> str:
    """One task dead-lettered twice in the same life, as a crash after the publish leaves it."""
    envelope, _ = build_envelope(
        builtin_registry(), "data_transformation", fields or {"dataset_size": 5}
    )
    data, attributes = envelope.to_message()
    publisher = Publisher(settings)
    try:
        for attempt in (1, 2):
            dead_letter(
                publisher,
                data,
                attributes,
                error_type="RuntimeError",
                error_message="backend said no",
                delivery_attempt=attempt,
                task_fields={"task_id": envelope.task_id, "task_type": "data_transformation"},
            )
    finally:
        publisher.close()
    return envelope.task_id


def test_copies_are_listed_and_counted_once_saying_how_many(pipeline):
    twice = dead_letter_twice(pipeline)
    (once,) = seed_dead_letters(pipeline, 1)

    listing = dlq_json(pipeline)
    table = taskctl(pipeline, "dlq", "list")

    assert listing["in_dlq"] == 2 and listing["matched"] == 2
    copies = {d["task_id"]: d["copies"] for d in listing["dead_letters"]}
    assert copies == {twice: 2, once: 1}
    assert table.stdout.count(twice) == 1 and "2 of 2 dead letters match" in table.stderr
    header, *rows = table.stdout.splitlines()
    at = header.index("COPIES")  # columns are padded to the header's positions
    assert {row.split()[0]: row[at:].split()[0] for row in rows if row.strip()} == {
        twice: "2",
        once: "1",
    }
    shown = taskctl(pipeline, "dlq", "show", twice)
    assert shown.exit_code == 0 and shown.stdout.count('"message_ids"') == 1


def test_a_replay_publishes_once_and_acks_every_copy(pipeline):
    twice = dead_letter_twice(pipeline)
    (kept,) = seed_dead_letters(pipeline, 1)

    result = taskctl(pipeline, "dlq", "replay", "--task-id", twice, "--yes")

    assert result.exit_code == 0, result.output
    replays = pull_all(pipeline, pipeline.subscription_path)
    assert [m.message.attributes["task_id"] for m in replays] == [twice]
    assert replays[0].message.attributes["replay_count"] == "1"
    assert "dead_letter_key" not in replays[0].message.attributes
    assert dlq_task_ids(pipeline) == Counter([kept])
    (audit,) = audit_records(pipeline)
    assert audit["task_ids"] == [twice]
    counts = audit["counts"]
    assert (counts["in_dlq"], counts["selected"], counts["done"]) == (2, 1, 1)
    assert (counts["copies"], counts["left_in_dlq"]) == (1, 0)


def test_a_purge_removes_every_copy_and_archives_them_as_one(pipeline):
    twice = dead_letter_twice(pipeline)
    (kept,) = seed_dead_letters(pipeline, 1)

    result = taskctl(pipeline, "dlq", "purge", "--task-id", twice, "--archive", "--yes")

    assert result.exit_code == 0, result.output
    assert dlq_task_ids(pipeline) == Counter([kept])
    (content,) = objects(pipeline, "dlq-archive/").values()
    (line,) = content.decode().splitlines()
    assert twice in line and line.count('"message_ids"') == 1
    (audit,) = audit_records(pipeline)
    assert audit["counts"]["done"] == 1 and audit["counts"]["copies"] == 1


def test_the_next_life_of_a_task_is_another_dead_letter(pipeline):
    task_id = dead_letter_twice(pipeline)
    assert taskctl(pipeline, "dlq", "replay", "--task-id", task_id, "--yes").exit_code == 0
    (replay,) = pull_all(pipeline, pipeline.subscription_path)
    publisher = Publisher(pipeline)
    try:  # the replay failed again: its own death
        dead_letter(
            publisher,
            replay.message.data,
            dict(replay.message.attributes),
            error_type="RuntimeError",
            error_message="still no",
            delivery_attempt=1,
            task_fields={"task_id": task_id},
        )
    finally:
        publisher.close()

    (letter,) = dlq_json(pipeline)["dead_letters"]
    assert (letter["task_id"], letter["replay_count"], letter["copies"]) == (task_id, 1, 1)


def test_id_less_poison_messages_are_each_their_own_dead_letter(pipeline):
    from background_worker.worker import drain_subscription

    for _ in range(2):
        publish_raw(pipeline, b"not json at all")
    drain_subscription(pipeline)

    listing = dlq_json(pipeline)
    assert listing["in_dlq"] == 2
    assert [d["copies"] for d in listing["dead_letters"]] == [1, 1]
