"""Operators browse, replay and purge dead letters with `taskctl dlq`, on the real emulators."""

from __future__ import annotations

import base64
import getpass
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from background_worker.worker import drain_subscription
from taskcore.status import TaskState, TaskStatus
from tests.integration.dlq_helpers import (
    audit_records,
    counting_registry,
    dlq_json,
    dlq_task_ids,
    objects,
    seed_dead_letters,
    seed_pubsub_dead_letter,
    status_store,
    taskctl,
)
from tests.integration.helpers import (
    outputs_of,
    publish_raw,
    publish_tasks,
    pull_all,
    settings_env,
    status_of,
    upload,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_replay_with_set_fixes_payload_and_all_succeed(pipeline):
    bucket = pipeline.bucket_name
    upload(pipeline, "readings.jsonl", b'{"v": 1}\n{"v": 3}\n', "application/x-ndjson")
    good = publish_tasks(
        pipeline,
        [
            ("data_transformation", {"dataset_size": 20}),
            ("data_transformation", {"dataset_size": 7, "transformation": "aggregate"}),
        ],
    )
    missing = publish_tasks(
        pipeline,
        [
            ("data_transformation", {"source_uri": f"gs://{bucket}/uploads/gone-{i}.jsonl"})
            for i in range(3)
        ],
    )
    # Schema violations published around the API: one envelope, one id-less recipe-shaped body.
    bad_envelope = {"task_id": "raw-bad-1", "task_type": "data_transformation"}
    publish_raw(pipeline, json.dumps({**bad_envelope, "payload": {"dataset_size": 0}}).encode())
    publish_raw(
        pipeline, json.dumps({"task_type": "data_transformation", "dataset_size": -3}).encode()
    )
    runs: Counter = Counter()

    first = drain_subscription(pipeline, task_types=counting_registry(runs))

    assert first.outcomes["succeeded"] == 2 and first.outcomes["dead_lettered"] == 5
    listing = dlq_json(pipeline)
    assert listing["in_dlq"] == 5
    by_error = Counter(d["error_type"] for d in listing["dead_letters"])
    assert by_error == {"missing_input": 3, "schema_violation": 2}
    for letter in listing["dead_letters"]:
        assert letter["source_subscription"] == pipeline.subscription_path
        assert letter["attempts"] >= 1 and letter["dead_lettered_by"] == "worker"
        assert letter["task_type"] == "data_transformation"
        if letter["error_type"] == "missing_input":
            assert letter["task_id"] in missing and "gone-" in letter["error_message"]
        else:
            assert "dataset_size" in letter["error_message"]
    id_less = {d["task_id"] for d in listing["dead_letters"]} - set(missing) - {"raw-bad-1"}
    assert len(id_less) == 1 and next(iter(id_less)).startswith("msg-")

    fix_input = taskctl(
        pipeline,
        *("dlq", "replay", "--error", "missing_input", "--yes"),
        *("--set", f"source_uri=gs://{bucket}/uploads/readings.jsonl"),
    )
    fix_schema = taskctl(
        pipeline, "dlq", "replay", "--error", "schema", "--set", "dataset_size=5", "--yes"
    )

    assert fix_input.exit_code == 0, fix_input.output
    assert "Replayed 3 of 3" in fix_input.output and "3 run as new tasks" in fix_input.output
    assert fix_schema.exit_code == 0, fix_schema.output
    assert "Replayed 2 of 2" in fix_schema.output
    second = drain_subscription(pipeline, task_types=counting_registry(runs))
    assert second.outcomes["succeeded"] == 5 and second.outcomes["dead_lettered"] == 0
    audits = audit_records(pipeline)
    # A patched payload is another task: it runs under its own id, linked both ways.
    replacements = {**audits[0]["new_tasks"], **audits[1]["new_tasks"]}
    assert sorted(replacements) == sorted([*missing, "raw-bad-1", *id_less])
    for original, replacement in replacements.items():
        status = status_of(pipeline, replacement)
        assert status.state == TaskState.SUCCEEDED and status.replay_of == original
        assert outputs_of(pipeline, replacement), replacement
        if original in missing or original == "raw-bad-1":
            before = status_of(pipeline, original)
            assert before.state == TaskState.DEAD_LETTERED and before.replayed_as == replacement
    for task_id in good:
        assert status_of(pipeline, task_id).state == TaskState.SUCCEEDED
    results = json.loads(outputs_of(pipeline, replacements[missing[0]])["results.json"])
    assert results["input_records"] == 2 and results["source"].endswith("readings.jsonl")
    assert dlq_json(pipeline)["in_dlq"] == 0
    ran = [*good, *replacements.values()]
    assert runs == Counter({task_id: 1 for task_id in ran}), "a task ran twice or never"
    assert [a["action"] for a in audits] == ["replay", "replay"]
    assert audits[0]["actor"] == {"kind": "os_user", "id": audits[0]["actor"]["id"]}
    assert audits[0]["actor"]["id"].startswith(getpass.getuser() + "@")
    assert audits[0]["filter"] == {"error": "missing_input"}
    assert audits[0]["counts"]["done"] == 3 and audits[0]["counts"]["left_in_dlq"] == 0
    assert audits[0]["options"]["sets"] == {"source_uri": f"gs://{bucket}/uploads/readings.jsonl"}
    assert sorted(audits[0]["task_ids"]) == sorted(missing)


def test_list_shows_reasons_of_both_kinds_and_consumes_nothing(pipeline):
    (by_worker,) = seed_dead_letters(pipeline, 1, error_type="missing_input", error_message="no x")
    by_pubsub = seed_pubsub_dead_letter(pipeline, {"dataset_size": 3}, deliveries=5)
    # The worker's last word on the task that Pub/Sub then gave up on.
    status_store(pipeline).create(
        TaskStatus(
            task_id=by_pubsub,
            task_type="data_transformation",
            state=TaskState.RETRYING,
            attempts=5,
            last_error={"type": "timeout", "message": "task exceeded its time limit of 300s"},
        )
    )

    table = taskctl(pipeline, "dlq", "list")
    listing = dlq_json(pipeline)

    assert table.exit_code == 0, table.output
    assert by_worker in table.stdout and by_pubsub in table.stdout
    assert "missing_input: no x" in table.stdout
    assert "2 of 2 dead letters match" in table.stderr
    rows = {d["task_id"]: d for d in listing["dead_letters"]}
    assert rows[by_worker]["error_type"] == "missing_input"
    assert rows[by_worker]["attempts"] == 5
    pubsub_row = rows[by_pubsub]
    assert pubsub_row["dead_lettered_by"] == "pubsub"
    assert pubsub_row["error_type"] == "delivery_attempts_exhausted"
    assert pubsub_row["error_message"].startswith("delivery attempts exhausted")
    assert "timeout: task exceeded its time limit" in pubsub_row["error_message"]
    assert pubsub_row["attempts"] == 5
    assert pubsub_row["source_subscription"] == pipeline.subscription_name
    # Browsing twice sees the same: nothing was consumed.
    assert dlq_json(pipeline)["in_dlq"] == 2


def test_show_prints_payload_attributes_and_status_record(pipeline):
    (task_id,) = publish_tasks(
        pipeline, [("file_processing", {"filename": "absent.txt", "processing_time": 0})]
    )
    drain_subscription(pipeline)

    result = taskctl(pipeline, "dlq", "show", task_id)

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["task_id"] == task_id and shown["error_type"] == "missing_input"
    assert shown["body"]["payload"]["filename"] == "absent.txt"
    assert shown["attributes"]["dead_lettered_by"] == "worker"
    assert shown["attributes"]["task_id"] == task_id
    assert shown["status"]["state"] == "dead_lettered"
    assert "absent.txt" in shown["status"]["last_error"]["message"]
    assert json.loads(base64.b64decode(shown["data_base64"]))["task_id"] == task_id
    assert taskctl(pipeline, "dlq", "show", "no-such-task").exit_code == 1
    assert dlq_json(pipeline)["in_dlq"] == 1


def test_list_sees_each_message_once_when_the_dlq_holds_more_than_one_pull(pipeline):
    seeded = seed_dead_letters(pipeline, 1200)

    first = dlq_json(pipeline)
    second = dlq_json(pipeline)

    for listing in (first, second):
        assert listing["in_dlq"] == 1200
        ids = [d["message_id"] for d in listing["dead_letters"]]
        assert len(ids) == len(set(ids)) == 1200
        assert sorted(d["task_id"] for d in listing["dead_letters"]) == sorted(seeded)


def test_filters_select_by_task_type_error_since_and_task_id(pipeline):
    old = datetime.now(UTC) - timedelta(days=2)
    stale = seed_dead_letters(pipeline, 2, failed_at=old, error_message="backend said no")
    files = seed_dead_letters(
        pipeline,
        3,
        task_type="file_processing",
        fields={"filename": "a.txt"},
        error_type="missing_input",
        error_message="uploads/a.txt does not exist",
    )
    recent = seed_dead_letters(pipeline, 1, error_message="Backend Said No again")

    def ids(*filters):
        return sorted(d["task_id"] for d in dlq_json(pipeline, *filters)["dead_letters"])

    assert ids("--task-type", "file_processing") == sorted(files)
    assert ids("--error", "BACKEND said") == sorted(stale + recent)
    assert ids("--error", "missing_input") == sorted(files)
    assert ids("--since", "1d") == sorted(files + recent)
    assert ids("--since", (old + timedelta(hours=1)).isoformat()) == sorted(files + recent)
    assert ids("--task-id", stale[0], "--task-id", files[1]) == sorted([stale[0], files[1]])
    assert ids("--task-type", "data_transformation", "--since", "1d") == recent
    limited = dlq_json(pipeline, "--limit", "2")
    assert limited["matched"] == 6 and len(limited["dead_letters"]) == 2
    assert sorted(d["task_id"] for d in limited["dead_letters"]) == sorted(stale), "oldest first"
    bad = taskctl(pipeline, "dlq", "list", "--since", "last tuesday")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_dry_run_reports_the_selection_and_changes_nothing(pipeline):
    seeded = seed_dead_letters(pipeline, 5)

    result = taskctl(
        pipeline, "dlq", "replay", "--all", "--dry-run", "--set", "dataset_size=9", "--yes"
    )

    assert result.exit_code == 0, result.output
    assert "would replay 5 of 5" in result.stderr and "nothing changed" in result.stderr
    for task_id in seeded:
        assert task_id in result.stdout
    previews = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {p["body"]["payload"]["dataset_size"] for p in previews} == {9}
    # A patched payload runs as a new task, linked to the original.
    assert sorted(p["attributes"]["replay_of"] for p in previews) == sorted(seeded)
    assert all(p["attributes"]["task_id"] == p["body"]["task_id"] for p in previews)
    assert dlq_task_ids(pipeline) == Counter(seeded)
    assert pull_all(pipeline, pipeline.subscription_path, wait=1.0) == []
    assert objects(pipeline, "audit/") == {}


def test_replay_is_paced_by_rate(pipeline):
    seed_dead_letters(pipeline, 20)

    result = taskctl(pipeline, "dlq", "replay", "--all", "--rate", "10/s", "--yes")

    assert result.exit_code == 0, result.output
    replayed = pull_all(pipeline, pipeline.subscription_path)
    assert len(replayed) == 20
    times = sorted(m.message.publish_time.timestamp() for m in replayed)
    # 20 publishes 0.1 s apart span 1.9 s; Pub/Sub stamps whole milliseconds.
    assert times[-1] - times[0] >= 1.7
    assert times[-1] - times[0] < 6.0


def test_limit_replays_only_the_n_oldest(pipeline):
    start = datetime.now(UTC) - timedelta(hours=1)
    seeded = seed_dead_letters(pipeline, 8, failed_at=start, spacing=timedelta(seconds=10))

    result = taskctl(pipeline, "dlq", "replay", "--all", "--limit", "3", "--yes")

    assert result.exit_code == 0, result.output
    replayed = pull_all(pipeline, pipeline.subscription_path)
    assert sorted(m.message.attributes["task_id"] for m in replayed) == sorted(seeded[:3])
    assert dlq_task_ids(pipeline) == Counter(seeded[3:])
    attrs = dict(replayed[0].message.attributes)
    assert attrs["replay_count"] == "1" and "replayed_at" in attrs
    assert not {"error_type", "error_message", "failed_at", "dead_lettered_by"} & set(attrs)


def test_purge_with_archive_writes_exactly_what_it_purged(pipeline):
    doomed = seed_dead_letters(pipeline, 3, task_type="file_processing", fields={})
    kept = seed_dead_letters(pipeline, 2)
    before = {d["task_id"]: d for d in dlq_json(pipeline)["dead_letters"]}

    result = taskctl(
        pipeline, "dlq", "purge", "--task-type", "file_processing", "--archive", "--yes"
    )

    assert result.exit_code == 0, result.output
    assert "Purged 3 of 5" in result.stderr
    archives = objects(pipeline, "dlq-archive/")
    assert len(archives) == 1
    (name, content) = next(iter(archives.items()))
    assert name.endswith(".jsonl") and name in result.stderr
    lines = [json.loads(line) for line in content.decode().splitlines()]
    assert sorted(line["task_id"] for line in lines) == sorted(doomed)
    assert sorted(line["message_id"] for line in lines) == sorted(
        before[t]["message_id"] for t in doomed
    )
    for line in lines:
        body = json.loads(base64.b64decode(line["data_base64"]))
        assert body["task_id"] == line["task_id"] == line["attributes"]["task_id"]
        assert line["error_type"] == "RuntimeError"
    assert dlq_task_ids(pipeline) == Counter(kept)
    (audit,) = audit_records(pipeline)
    assert audit["action"] == "purge" and audit["archive"] == f"gs://{pipeline.bucket_name}/{name}"
    assert audit["filter"] == {"task_type": "file_processing"}
    assert audit["counts"]["done"] == 3 and audit["counts"]["in_dlq"] == 5


def test_invalid_patch_is_refused_and_nothing_is_published(pipeline):
    seeded = seed_dead_letters(pipeline, 2)

    result = taskctl(pipeline, "dlq", "replay", "--all", "--set", "dataset_size=0", "--yes")

    assert result.exit_code == 1
    assert "invalid" in result.output and "nothing was replayed" in result.output
    assert dlq_task_ids(pipeline) == Counter(seeded)
    assert pull_all(pipeline, pipeline.subscription_path, wait=1.0) == []


def test_replay_asks_for_confirmation_and_needs_a_selection(pipeline):
    seeded = seed_dead_letters(pipeline, 2)

    declined = taskctl(pipeline, "dlq", "replay", "--task-type", "data_transformation", input="n\n")
    unselected = taskctl(pipeline, "dlq", "replay", "--yes")
    unselected_purge = taskctl(pipeline, "dlq", "purge", "--yes")

    assert declined.exit_code == 0, declined.output
    assert "Replay 2 dead letter(s)" in declined.output and "Cancelled" in declined.output
    assert unselected.exit_code == 2 and "--all" in unselected.output
    assert unselected_purge.exit_code == 2
    assert dlq_task_ids(pipeline) == Counter(seeded)
    assert objects(pipeline, "audit/") == {}


def test_replaying_a_task_that_already_succeeded_is_skipped_and_says_so(pipeline):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 4})])
    runs: Counter = Counter()
    drain_subscription(pipeline, task_types=counting_registry(runs))
    # A stale dead letter of the same task, e.g. from a lease that lapsed mid-run.
    seed_pubsub_dead_letter(pipeline, {"dataset_size": 4}, task_id=task_id)

    result = taskctl(pipeline, "dlq", "replay", "--task-id", task_id, "--yes")
    summary = drain_subscription(pipeline, task_types=counting_registry(runs))

    assert result.exit_code == 0, result.output
    assert "Replayed 0 of 1" in result.output and "1 skipped" in result.output
    assert summary.received == 0, "nothing was published"
    assert runs == Counter({task_id: 1})
    assert dlq_json(pipeline)["in_dlq"] == 0, "the stale dead letter is gone"
    (audit,) = audit_records(pipeline)
    assert audit["counts"]["skipped"] == 1 and audit["skipped"][0]["task_id"] == task_id


def test_a_patched_replay_of_a_task_that_succeeded_runs_as_a_new_linked_task(pipeline):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 4})])
    runs: Counter = Counter()
    drain_subscription(pipeline, task_types=counting_registry(runs))
    seed_pubsub_dead_letter(pipeline, {"dataset_size": 4}, task_id=task_id)

    result = taskctl(
        pipeline, "dlq", "replay", "--task-id", task_id, "--set", "dataset_size=9", "--yes"
    )
    summary = drain_subscription(pipeline, task_types=counting_registry(runs))

    assert result.exit_code == 0, result.output
    assert summary.outcomes["succeeded"] == 1, "the changed payload ran"
    (audit,) = audit_records(pipeline)
    new_id = audit["new_tasks"][task_id]
    assert status_of(pipeline, new_id).replay_of == task_id
    assert json.loads(outputs_of(pipeline, new_id)["results.json"])["input_records"] == 9
    assert status_of(pipeline, task_id).state == TaskState.SUCCEEDED, "the original stands"
    assert runs == Counter({task_id: 1, new_id: 1})


def test_ctrl_c_stops_a_replay_and_leaves_the_unpublished_in_the_dlq(pipeline, tmp_path):
    seeded = seed_dead_letters(pipeline, 40)
    env = {**os.environ, **settings_env(pipeline), "PYTHONPATH": str(ROOT)}
    # Slow enough (20 s for the 40) that the interrupt lands mid-replay even when the first
    # publish confirmation, which shows the progress bar, comes seconds late on a loaded
    # machine (publishes go on meanwhile; the test waits for the bar, then interrupts).
    argv = [sys.executable, "-m", "taskctl", "dlq", "replay", "--all", "--rate", "2/s"]
    log = (tmp_path / "replay.log").open("w")
    proc = subprocess.Popen([*argv, "--yes"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The progress bar appears with the first confirmed replay; let a few more follow.
        deadline = time.monotonic() + 60
        while "Replaying" not in (tmp_path / "replay.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "replay never started"
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "replay.log").read_text()

    assert code == 130, output
    assert "interrupted" in output
    replayed = Counter(
        m.message.attributes["task_id"] for m in pull_all(pipeline, pipeline.subscription_path)
    )
    remaining = dlq_task_ids(pipeline)
    assert 0 < sum(replayed.values()) < 40
    assert replayed + remaining == Counter(seeded), "a dead letter was lost or duplicated"
    (audit,) = audit_records(pipeline)
    assert audit["interrupted"] is True
    assert audit["counts"]["done"] == sum(replayed.values())
