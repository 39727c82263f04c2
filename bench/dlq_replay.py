"""List, then replay, 10,000 dead letters; verify each was replayed exactly once.

Each run seeds N dead letters (as the worker publishes them) on fresh resources of one
pair of freshly started emulators (Google's Pub/Sub emulator where installed, the patched
GCS emulator), then times:
- list:   a full browse of the DLQ (`taskctl dlq list`), which must see all N and consume none;
- replay: `taskctl dlq replay --all` (its own scan, N confirmed publishes, N acks, the audit).
It then pulls the task subscription dry and checks that every task id arrived exactly once
and that the DLQ is empty. Medians over the runs; exit 1 if any run's accounting is off.

    .venv/bin/python bench/dlq_replay.py [--messages 10000] [--runs 3] [--rate N/s] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from devstack.emulators import start_gcs_emulator, start_pubsub_emulator
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client, subscriber_client
from taskcore.deadletter import dead_letter_attributes
from taskcore.dlq.audit import Actor
from taskcore.dlq.letters import DeadLetterFilter
from taskcore.dlq.replay import parse_rate, run_replay
from taskcore.dlq.scan import browse
from taskcore.envelope import build_envelope
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import StatusStore
from taskcore.tasks import load_task_modules

ROOT = Path(__file__).resolve().parent.parent


def fresh_settings() -> Settings:
    """Unique resource names on the running emulators."""
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        project_id="bench-project",
        topic_name=f"tasks-{suffix}",
        subscription_name=f"tasks-{suffix}-worker",
        dlq_topic_name=f"tasks-{suffix}-dlq",
        dlq_subscription_name=f"tasks-{suffix}-dlq-sub",
        bucket_name=f"bench-{suffix}",
        pubsub_emulator_host=os.environ["PUBSUB_EMULATOR_HOST"],
        storage_emulator_host=os.environ["STORAGE_EMULATOR_HOST"],
    )


def seed(settings: Settings, count: int) -> list[str]:
    """Publish count dead letters to the DLQ topic, as the worker does; their task ids."""
    registry = load_task_modules(("example_tasks",))
    publisher = Publisher(settings)
    ids, futures = [], []
    try:
        for i in range(count):
            envelope, _ = build_envelope(registry, "data_transformation", {"dataset_size": 10})
            data, original = envelope.to_message()
            attributes = dead_letter_attributes(
                original,
                error_type="missing_input" if i % 2 else "RuntimeError",
                error_message=f"failure number {i}",
                delivery_attempt=5,
                source_subscription=settings.subscription_path,
                task_fields={"task_id": envelope.task_id, "task_type": envelope.task_type},
            )
            futures.append(publisher.client.publish(settings.dlq_topic_path, data, **attributes))
            ids.append(envelope.task_id)
        for future in futures:
            future.result(timeout=120)
    finally:
        publisher.close()
    return ids


def drain_task_ids(settings: Settings, quiet: float = 3.0) -> Counter:
    """Pull (and ack) the task subscription until it stays empty; task ids by count."""
    subscriber = subscriber_client(settings)
    seen: Counter = Counter()
    last = time.monotonic()
    try:
        while time.monotonic() - last < quiet:
            response = subscriber.pull(
                request={"subscription": settings.subscription_path, "max_messages": 1000},
                timeout=5,
            )
            received = response.received_messages
            if not received:
                time.sleep(0.05)
                continue
            last = time.monotonic()
            seen.update(m.message.attributes["task_id"] for m in received)
            subscriber.acknowledge(
                request={
                    "subscription": settings.subscription_path,
                    "ack_ids": [m.ack_id for m in received],
                }
            )
    finally:
        subscriber.close()
    return seen


def one_run(count: int, rate: float | None) -> dict:
    settings = fresh_settings()
    bootstrap(settings)
    bucket = make_bucket(settings, storage_client(settings))
    task_ids = seed(settings, count)

    started = time.monotonic()
    listing = browse(settings, DeadLetterFilter(), store=StatusStore(bucket))
    list_seconds = time.monotonic() - started
    listed = Counter(letter.task_id for letter in listing.shown)

    started = time.monotonic()
    result = run_replay(
        settings, DeadLetterFilter(everything=True), actor=Actor.os_user(), bucket=bucket, rate=rate
    )
    replay_seconds = time.monotonic() - started

    arrived = drain_task_ids(settings)
    left = browse(settings, DeadLetterFilter()).total
    expected = Counter(task_ids)
    return {
        "messages": count,
        "list_seconds": round(list_seconds, 3),
        "list_pulls": listing.stats.pulls,
        "list_redelivered": listing.stats.redelivered,
        "listed_each_once": listed == expected,
        "replay_seconds": round(replay_seconds, 3),
        "replays_per_second": round(result.done / replay_seconds, 1),
        "replayed": result.done,
        "failed": len(result.failed),
        "replayed_each_once": arrived == expected,
        "duplicates": sum(n - 1 for n in arrived.values() if n > 1),
        "missing": len(set(expected) - set(arrived)),
        "left_in_dlq": left,
        "audit": result.audit,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", default=None, help="replay --rate, e.g. 2000/s (default: none)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "dlq_replay.json"))
    args = parser.parse_args()
    rate = parse_rate(args.rate)
    logs = tempfile.mkdtemp(prefix="bench-dlq-")
    with (
        start_pubsub_emulator(log_path=f"{logs}/pubsub.log") as pubsub,
        start_gcs_emulator(log_path=f"{logs}/gcs.log") as gcs,
    ):
        os.environ.update({**pubsub.env, **gcs.env})
        runs = []
        for number in range(1, args.runs + 1):
            run = one_run(args.messages, rate)
            runs.append(run)
            print(
                f"run {number}: list {run['list_seconds']:.2f}s ({run['list_pulls']} pulls), "
                f"replay {run['replay_seconds']:.2f}s ({run['replays_per_second']:.0f}/s), "
                f"each listed once: {run['listed_each_once']}, "
                f"each replayed once: {run['replayed_each_once']}, "
                f"left in DLQ: {run['left_in_dlq']}",
                flush=True,
            )
    shutil.rmtree(logs, ignore_errors=True)
    summary = {
        "messages": args.messages,
        "rate": args.rate,
        "runs": len(runs),
        "pubsub_emulator": pubsub.kind,
        "median_list_seconds": statistics.median(r["list_seconds"] for r in runs),
        "median_replay_seconds": statistics.median(r["replay_seconds"] for r in runs),
        "median_replays_per_second": statistics.median(r["replays_per_second"] for r in runs),
        "all_exactly_once": all(
            r["listed_each_once"] and r["replayed_each_once"] and r["left_in_dlq"] == 0
            for r in runs
        ),
        "details": runs,
    }
    print(
        f"\n{args.messages} dead letters, median of {len(runs)}: "
        f"list {summary['median_list_seconds']:.2f}s, "
        f"replay {summary['median_replay_seconds']:.2f}s "
        f"({summary['median_replays_per_second']:.0f}/s); "
        f"exactly once: {summary['all_exactly_once']}"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0 if summary["all_exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
