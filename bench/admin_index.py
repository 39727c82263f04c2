"""The dashboard at scale: overview and task pages with 100,000 status records.

Seeds N tasks (default 100,000) over the last `--hours` (default 24) through the real
StatusStore and transition journal on the patched GCS emulator, as the pipeline writes them:
a worker execution every 5 minutes (each its own journal writer, flushing every 10 s of
simulated time and closing at the end; the newest still running some tasks), one record per
task in its final state (90% succeeded, 4% dead-lettered, 3% retrying, 1% cancelled, the
newest few queued or running). Then it serves the API (gunicorn, as `taskctl api` does) and
times, with p50/p95 over `--requests` calls each:

- GET /admin/overview                      (the hour's charts, running now, backlog)
- GET /admin/tasks?limit=50                (the first page)
- GET /admin/tasks?limit=50&cursor=...     (the second page)
- GET /admin/tasks?status=dead_lettered    (a filtered first page)

`--compare` also times one listing the old way (StatusStore.list: every record read).

    .venv/bin/python bench/admin_index.py [--tasks 100000] [--requests 40] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from dlq_replay import fresh_settings

from devstack.emulators import free_port, start_gcs_emulator, start_pubsub_emulator
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.journal import Journal
from taskcore.settings import Settings
from taskcore.status import ErrorInfo, StatusStore, TaskState, TaskStatus

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "admin_index.json"
ADMIN_KEY = "bench-admin-key"
EXECUTION_SECONDS = 300
FLUSH_SECONDS = 10
STATES = [
    (TaskState.SUCCEEDED, 0.90),
    (TaskState.DEAD_LETTERED, 0.04),
    (TaskState.RETRYING, 0.03),
    (TaskState.CANCELLED, 0.01),
    (TaskState.SUCCEEDED, 0.02),
]


class SimulatedClock:
    """time.time() of the seeded history, moved by the seeder."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def task_record(task_id: str, state: TaskState, at: datetime, recent: bool) -> TaskStatus:
    if recent:
        state = random.choice([TaskState.QUEUED, TaskState.RUNNING, state])
    failed = state in (TaskState.DEAD_LETTERED, TaskState.RETRYING)
    error = ErrorInfo(type="missing_input", message="no such input", at=at, attempt=1)
    return TaskStatus(
        task_id=task_id,
        task_type=random.choice(["data_transformation", "file_processing"]),
        state=state,
        attempts=0 if state == TaskState.QUEUED else 1 + failed,
        failures=int(failed),
        last_error=error if failed else None,
        errors=[error] if failed else [],
        payload={"dataset_size": random.randint(10, 1000), "transformation": "aggregate"},
        submitted_at=at - timedelta(seconds=2),
        updated_at=at,
        finished_at=at if state not in (TaskState.QUEUED, TaskState.RUNNING) else None,
    )


def seed(settings: Settings, tasks: int, hours: float) -> dict:
    """Write `tasks` records over the last `hours` through journaled stores; what was written."""
    bucket = make_bucket(settings, storage_client(settings, pool_size=32))
    end = time.time()
    start = end - hours * 3600
    clock = SimulatedClock(start)
    weights = [w for _, w in STATES]
    states = [s for s, _ in STATES]
    spacing = (end - start) / tasks
    started = time.monotonic()
    journal: Journal | None = None
    store: StatusStore | None = None
    execution_end = start
    pending: list[TaskStatus] = []
    counts: dict[str, int] = {}
    pool = ThreadPoolExecutor(16)

    def write(batch: list[TaskStatus]) -> None:
        list(pool.map(store.create, batch))

    for i in range(tasks):
        at = start + i * spacing
        if journal is None or at >= execution_end:
            if journal is not None:
                write(pending)
                pending = []
                journal.close()
            journal = Journal(bucket, f"worker-bench-{int(at)}", clock=clock)
            store = StatusStore(bucket, on_written=journal.written)
            execution_end = at + EXECUTION_SECONDS
        if at - clock.now >= FLUSH_SECONDS:
            write(pending)
            pending = []
            journal.flush()
            clock.now = at
        recent = end - at < 60
        state = random.choices(states, weights)[0]
        record = task_record(uuid.uuid4().hex, state, datetime.fromtimestamp(at, UTC), recent)
        counts[record.state.value] = counts.get(record.state.value, 0) + 1
        pending.append(record)
        if (i + 1) % 10000 == 0:
            print(
                f"  seeded {i + 1:,} ({(i + 1) / (time.monotonic() - started):.0f}/s)", flush=True
            )
    write(pending)
    clock.now = end
    journal.flush()  # the newest execution is still running: not closed
    pool.shutdown()
    journal_objects = sum(1 for _ in bucket.list_blobs(prefix="journal/"))
    return {
        "tasks": tasks,
        "by_state": counts,
        "journal_objects": journal_objects,
        "seed_seconds": round(time.monotonic() - started, 1),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed(session: requests.Session, url: str, calls: int) -> dict:
    """p50/p95 (ms) of calls GETs of url, after 3 to warm up."""
    for _ in range(3):
        session.get(url, timeout=60).raise_for_status()
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        response = session.get(url, timeout=60)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
    ms = [1000 * s for s in seconds]
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
        "calls": calls,
    }


def serve_api(settings: Settings, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **settings.as_environ(), "ADMIN_API_KEYS": ADMIN_KEY, "PORT": str(port)}
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "task_api.server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the API did not start; see {log_path}")


def measure(url: str, calls: int) -> dict:
    session = requests.Session()
    session.headers["X-API-Key"] = ADMIN_KEY
    first = session.get(f"{url}/admin/tasks?limit=50", timeout=60).json()
    cursor = first["next_cursor"]
    return {
        "overview": timed(session, f"{url}/admin/overview", calls),
        "tasks_first_page": timed(session, f"{url}/admin/tasks?limit=50", calls),
        "tasks_second_page": timed(session, f"{url}/admin/tasks?limit=50&cursor={cursor}", calls),
        "tasks_dead_lettered": timed(
            session, f"{url}/admin/tasks?limit=50&status=dead_lettered", calls
        ),
        "first_page_size": len(first["tasks"]),
    }


def compare_old_listing(settings: Settings) -> dict:
    """The old overview's cost: every status record read (StatusStore.list)."""
    store = StatusStore(make_bucket(settings, storage_client(settings)))
    started = time.monotonic()
    records = store.list(limit=50)
    return {"old_listing_seconds": round(time.monotonic() - started, 1), "shown": len(records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--compare", action="store_true", help="also time the old listing")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("TASKCTL_PUBSUB_EMULATOR", "python")
    random.seed(7)
    logs = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    with (
        start_pubsub_emulator(log_path=str(logs / "pubsub.log")) as pubsub,
        start_gcs_emulator(log_path=str(logs / "gcs.log")) as gcs,
    ):
        os.environ.update({**pubsub.env, **gcs.env})
        settings = fresh_settings().replace(
            monitoring_emulator_host=pubsub.env.get("MONITORING_EMULATOR_HOST")
        )
        bootstrap(settings)
        print(f"seeding {args.tasks:,} tasks over {args.hours:g} h …", flush=True)
        seeded = seed(settings, args.tasks, args.hours)
        print(f"  {seeded}", flush=True)
        api, url = serve_api(settings, logs / "api.log")
        try:
            figures = measure(url, args.requests)
        finally:
            api.terminate()
            api.wait(timeout=30)
        if args.compare:
            figures.update(compare_old_listing(settings))
    result = {"seeded": seeded, **figures, "machine_cpus": os.cpu_count()}
    print(json.dumps(result, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
