"""Peak memory of a worker execution running one big built-in task (issue: bounded and safe).

Starts the emulators, uploads a 10 MiB CSV, and runs one `taskctl worker` execution per task
(and one with nothing to do, the baseline), each under `/usr/bin/time -f %M`: the peak RSS
of the whole process, Python and its clients included. The first release peaked at about
1.6 GB for `dataset_size` 1,000,000 and about 4 GB for a 10 MiB CSV; the target is at most
256 MiB per task. Deterministic inputs; one run each is enough (RSS barely varies), --runs
gives medians.

    .venv/bin/python bench/task_memory.py [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack.emulators import start_gcs_emulator, start_pubsub_emulator
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.publishing import publish_new_task
from taskcore.settings import Settings
from taskcore.status import StatusStore
from taskcore.tasks import load_task_modules

ROOT = Path(__file__).resolve().parent.parent
CSV_BYTES = 10 * 1024 * 1024
TIME = "/usr/bin/time"


def big_csv() -> bytes:
    """A 10 MiB CSV of id, region, amount, note (seeded: the same bytes every run)."""
    rng = random.Random(7)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["id", "region", "amount", "note"])
    row = 0
    while text.tell() < CSV_BYTES:
        writer.writerow([row, rng.choice("abcdefgh"), round(rng.uniform(0, 1000), 2), "x" * 40])
        row += 1
    return text.getvalue().encode()


def execution(settings: Settings, registry, task_type: str | None, fields: dict) -> dict:
    """One worker execution (with this one task queued, or none): peak RSS and the outcome."""
    task_id = None
    if task_type:
        task_id = publish_new_task(settings, registry, task_type, fields).task_id
    done = subprocess.run(
        [TIME, "-f", "%M", sys.executable, "-m", "taskctl", "worker"],
        env={**os.environ, **settings.as_environ(), "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    result = {"peak_rss_mib": round(int(done.stderr.strip().splitlines()[-1]) / 1024, 1)}
    if task_id:
        record = StatusStore(make_bucket(settings, storage_client(settings))).get(task_id)
        result["state"] = str(record.state)
        result["run_seconds"] = round((record.finished_at - record.started_at).total_seconds(), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "task_memory.json"))
    args = parser.parse_args()
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} is needed (Debian: apt-get install time)")
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        pubsub = stack.enter_context(start_pubsub_emulator(log_path=f"{workdir}/pubsub.log"))
        gcs = stack.enter_context(start_gcs_emulator(log_path=f"{workdir}/gcs.log"))
        os.environ.update(pubsub.env)
        os.environ.update(gcs.env)
        settings = Settings.from_env().replace(idle_timeout_seconds=2.0, task_timeout_seconds=600)
        bootstrap(settings)
        registry = load_task_modules(settings.task_modules)
        data = big_csv()
        bucket = make_bucket(settings, storage_client(settings))
        bucket.blob("uploads/big.csv").upload_from_string(data, content_type="text/csv")
        uri = f"gs://{settings.bucket_name}/uploads/big.csv"
        cases = {
            "idle execution (baseline)": (None, {}),
            "dataset_size 1,000,000, normalize": (
                "data_transformation",
                {"dataset_size": 1_000_000, "transformation": "normalize"},
            ),
            "dataset_size 1,000,000, aggregate": (
                "data_transformation",
                {"dataset_size": 1_000_000, "transformation": "aggregate"},
            ),
            "10 MiB CSV, normalize": (
                "data_transformation",
                {"source_uri": uri, "transformation": "normalize"},
            ),
            "10 MiB CSV, aggregate by region": (
                "data_transformation",
                {"source_uri": uri, "transformation": "aggregate", "group_by": "region"},
            ),
        }
        results = {}
        for name, (task_type, fields) in cases.items():
            runs = [execution(settings, registry, task_type, fields) for _ in range(args.runs)]
            results[name] = {
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                **{k: v for k, v in runs[-1].items() if k != "peak_rss_mib"},
                "runs": runs,
            }
            print(f"{name:36} {results[name]['peak_rss_mib']:7.1f} MiB  {runs[-1]}", flush=True)
    results["csv_rows"] = data.count(b"\n") - 1
    results["emulator"] = pubsub.kind
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
