"""Drain throughput of one worker execution, measured from the moment the worker starts.

Scenarios (issue "The pipeline end to end"):
- files:  2,000 queued file_processing tasks, each with its own small uploaded input
          (real GCS reads and writes, status records on); target >= 100 tasks/s.
- io:     400 tasks with processing_time 0.5 s (I/O-bound work); target >= 50 tasks/s.
Both: the execution exits by itself <= 6 s after the last output is written.

Each run starts fresh emulators (Google's Pub/Sub emulator where installed, the patched
GCS emulator), bootstraps, queues the tasks, then runs `taskctl worker` as a subprocess,
as a Cloud Run Job execution would. Throughput = tasks / (last status write - worker start).

    .venv/bin/python bench/drain.py [--runs 3] [--scenario files|io|all] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.emulators import start_gcs_emulator, start_pubsub_emulator
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.envelope import build_envelope
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import StatusStore
from taskcore.tasks import load_task_modules

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "files": {"tasks": 2000, "processing_time": 0.0, "target": 100.0},
    "io": {"tasks": 400, "processing_time": 0.5, "target": 50.0},
}
EXIT_TARGET = 6.0


def queue_tasks(settings: Settings, count: int, processing_time: float) -> list[str]:
    """Upload one small input per task and publish the tasks; return their ids."""
    bucket = make_bucket(settings, storage_client(settings))
    registry = load_task_modules(("example_tasks",))

    def upload(i: int) -> None:
        text = f"line one of input {i}\nline two has a few more words\n" * 8
        bucket.blob(f"uploads/in-{i:05d}.txt").upload_from_string(text, content_type="text/plain")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(upload, range(count)))
    publisher = Publisher(settings)
    ids, futures = [], []
    for i in range(count):
        fields = {"filename": f"in-{i:05d}.txt"}
        if processing_time:
            fields["processing_time"] = processing_time
        envelope, _ = build_envelope(registry, "file_processing", fields)
        data, attributes = envelope.to_message()
        futures.append(publisher.client.publish(settings.topic_path, data, **attributes))
        ids.append(envelope.task_id)
    for future in futures:
        future.result(timeout=60)
    publisher.close()
    return ids


def last_output_time(settings: Settings, task_ids: list[str]) -> tuple[float, int]:
    """Wall time of the last succeeded status write, and how many tasks succeeded."""
    store = StatusStore(make_bucket(settings, storage_client(settings)))
    with ThreadPoolExecutor(16) as pool:
        records = list(pool.map(store.get, task_ids))
    done = [r for r in records if r is not None and r.state == "succeeded"]
    latest = max((r.finished_at.timestamp() for r in done), default=float("nan"))
    return latest, len(done)


def run_once(scenario: str, workdir: str) -> dict:
    """One fresh stack, one queued backlog, one worker execution; its figures."""
    spec = SCENARIOS[scenario]
    with (
        start_pubsub_emulator(log_path=f"{workdir}/pubsub.log") as pubsub,
        start_gcs_emulator(log_path=f"{workdir}/gcs.log") as gcs,
    ):
        os.environ.update(pubsub.env)
        os.environ.update(gcs.env)
        settings = Settings.from_env()
        bootstrap(settings)
        task_ids = queue_tasks(settings, spec["tasks"], spec["processing_time"])
        env = {**os.environ, "LOG_LEVEL": "INFO"}
        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "taskctl", "worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
        exited = time.time()
        last_write, succeeded = last_output_time(settings, task_ids)
    if proc.returncode != 0:
        raise SystemExit(f"worker exited {proc.returncode}:\n{proc.stdout.decode()[-3000:]}")
    busy = last_write - started
    return {
        "scenario": scenario,
        "tasks": spec["tasks"],
        "succeeded": succeeded,
        "tasks_per_second": succeeded / busy,
        "seconds_to_last_output": busy,
        "exit_after_last_output": exited - last_write,
        "pubsub_emulator": pubsub.kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "drain.json"))
    args = parser.parse_args()
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    summary = {}
    with tempfile.TemporaryDirectory() as workdir:
        for scenario in scenarios:
            runs = [run_once(scenario, workdir) for _ in range(args.runs)]
            for r in runs:
                print(
                    f"{scenario:5} run: {r['succeeded']}/{r['tasks']} tasks, "
                    f"{r['tasks_per_second']:7.1f} tasks/s, exit {r['exit_after_last_output']:.2f}s "
                    "after the last output",
                    flush=True,
                )
            median = {
                "tasks_per_second": statistics.median(r["tasks_per_second"] for r in runs),
                "exit_after_last_output": statistics.median(
                    r["exit_after_last_output"] for r in runs
                ),
                "target_tasks_per_second": SCENARIOS[scenario]["target"],
                "target_exit_seconds": EXIT_TARGET,
                "runs": runs,
            }
            summary[scenario] = median
    print("\nscenario   tasks/s (median)   target   exit after last output (median)   target")
    for scenario, m in summary.items():
        print(
            f"{scenario:8} {m['tasks_per_second']:12.1f} {m['target_tasks_per_second']:12.0f}"
            f" {m['exit_after_last_output']:22.2f}s {EXIT_TARGET:17.0f}s"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
