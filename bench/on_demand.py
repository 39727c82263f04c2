"""Executions on demand, locally through the Cloud Run Jobs stand-in (issue: queues on demand).

Each run starts a fresh stack the way `taskctl dev` does: emulators, bootstrap, the stand-in
with the default queue's job, the API with its dispatcher on, and a tick twice a second (as `taskctl dev`). Then:

- latency: from idle (no worker process), POST /submit-task, and time until the task's record
  says running (its `started_at`), SAMPLES times; p50 and p99 (targets 1.5 s and 3 s);
- idle: 30 s after the last task ran, the `taskctl worker` processes still alive (target 0),
  and what the recheck a lease later costs (executions started, processes left at 100 s);
- burst: 10,000 tasks submitted in batches of 500 as fast as the API takes them: executions
  and parallel worker tasks started, peak parallel tasks, and the drain time (first submit to
  last task succeeded), against one execution draining the same 10,000 already queued;
- delayed: DELAYED tasks with run_at spread over the next 20 s: lateness of their publish
  (`queued` in their history) and of their start after run_at, p50 and p99.

    .venv/bin/python bench/on_demand.py [--runs 3] [--scenario latency,idle,burst,delayed]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import requests

from devstack.emulators import (
    free_port,
    start_gcs_emulator,
    start_jobs_standin,
    start_pubsub_emulator,
)
from devstack.local_jobs import Ticker, define_worker_jobs
from dispatcher.jobs import JobsGateway
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.envelope import build_envelope
from taskcore.publishing import Publisher
from taskcore.schedule import ScheduleStore
from taskcore.settings import Settings
from taskcore.status import StatusStore
from taskcore.tasks import load_task_modules

ROOT = Path(__file__).resolve().parent.parent
WORK = {"task_type": "data_transformation", "dataset_size": 5, "transformation": "normalize"}
SAMPLES = 20
BURST = 10_000
DELAYED = 60
# A burst not drained by then is reported with what is left, not waited on for ever.
BURST_DEADLINE_SECONDS = 900


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Stack:
    """A fresh local stack with the dispatcher on; everything stopped on exit."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        pubsub = self.stack.enter_context(start_pubsub_emulator(log_path=f"{self.workdir}/ps.log"))
        gcs = self.stack.enter_context(start_gcs_emulator(log_path=f"{self.workdir}/gcs.log"))
        os.environ.update(pubsub.env)
        os.environ.update(gcs.env)
        os.environ["DISPATCH_ENABLED"] = "true"
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        base = Settings.from_env()
        bootstrap(base)
        standin = start_jobs_standin(
            log_path=f"{self.workdir}/jobs.log", work_dir=f"{self.workdir}/jobs"
        )
        self.stack.callback(standin.stop)
        self.standin = standin
        os.environ.update(standin.env)
        self.settings = Settings.from_env()
        define_worker_jobs(standin.env_value, self.settings, load_task_modules(("example_tasks",)))
        port = free_port()
        self.api = subprocess.Popen(
            [sys.executable, "-m", "task_api.server", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "API_WORKERS": "2", "API_THREADS": "16"},
            stdout=open(f"{self.workdir}/api.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.stack.callback(self._stop_api)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.1)
        self.ticker = Ticker(f"{self.url}/internal/tick").start()
        self.stack.callback(self.ticker.stop)
        self.jobs = JobsGateway(self.settings)
        self.stack.callback(self.jobs.close)
        self.store = StatusStore(make_bucket(self.settings, storage_client(self.settings)))
        return self

    def _stop_api(self) -> None:
        self.api.terminate()
        try:
            self.api.wait(15)
        except subprocess.TimeoutExpired:
            self.api.kill()

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def executions(self):
        return self.jobs.executions(self.settings.worker_job_name)

    def running_tasks(self) -> int:
        return sum(e.running_tasks for e in self.executions())

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.running_tasks():
            if time.monotonic() > deadline:
                raise SystemExit("executions did not end")
            time.sleep(0.2)


def worker_processes(stack: Stack) -> int:
    """`taskctl worker` processes the stand-in runs (other users of the machine not counted)."""
    count = 0
    for proc in psutil.Process(stack.standin.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "taskctl" in " ".join(proc.cmdline()):
                count += 1
    return count


def latency_run(stack: Stack) -> dict:
    session = requests.Session()
    latencies = []
    for _ in range(SAMPLES):
        stack.wait_idle()
        time.sleep(random.uniform(0.0, 1.0))  # not in step with the tick
        submitted = datetime.now(UTC)
        task_id = session.post(f"{stack.url}/submit-task", json=WORK, timeout=10).json()["task_id"]
        deadline = time.monotonic() + 30
        while True:
            record = stack.store.get(task_id)
            if record is not None and record.started_at is not None:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"task {task_id} did not start")
            time.sleep(0.05)
        latencies.append((record.started_at - submitted).total_seconds())
    return {
        "samples": len(latencies),
        "p50_s": percentile(latencies, 0.5),
        "p99_s": percentile(latencies, 0.99),
        "max_s": max(latencies),
    }


def idle_run(stack: Stack) -> dict:
    """One task from quiet; then worker processes 30 s after it succeeded (the target: 0),
    and what the recheck it leaves (a lease later) costs: executions started and processes
    left 100 s after. Earlier scenarios' rechecks are let pass first, so they are not
    counted against this one."""
    schedule = ScheduleStore(make_bucket(stack.settings, storage_client(stack.settings)))
    quiet_by = time.monotonic() + 180
    while (schedule.next_due() is not None or stack.running_tasks()) and (
        time.monotonic() < quiet_by
    ):
        time.sleep(0.5)
    before = _executions_started(stack)
    task_id = requests.post(f"{stack.url}/submit-task", json=WORK, timeout=10).json()["task_id"]
    while (record := stack.store.get(task_id)) is None or record.state != "succeeded":
        time.sleep(0.1)
    time.sleep(30)
    at_30 = worker_processes(stack)
    time.sleep(70)
    return {
        "worker_processes_30s_after_empty": at_30,
        "worker_processes_100s_after_empty": worker_processes(stack),
        "executions_for_one_task_incl_recheck": _executions_started(stack) - before,
    }


def burst_run(stack: Stack) -> dict:
    session = requests.Session()
    executions_before = _executions_started(stack)
    tasks_before = _tasks_started(stack)
    started = time.time()
    ids: list[str] = []
    peak = 0
    for _ in range(BURST // 500):
        answer = session.post(f"{stack.url}/submit-tasks", json={"tasks": [WORK] * 500}, timeout=60)
        ids += [r["task_id"] for r in answer.json()["results"]]
        peak = max(peak, stack.running_tasks())
    submitted = time.time() - started
    # Read only what has not succeeded yet, every 2 s: reading all 10,000 records in a loop
    # would load the GCS emulator the workers write to, and slow what is measured.
    pending, last_finish = set(ids), 0.0
    with ThreadPoolExecutor(8) as pool:
        while pending and time.time() - started < BURST_DEADLINE_SECONDS:
            time.sleep(2)
            peak = max(peak, stack.running_tasks())
            batch = list(pending)
            for task_id, record in zip(batch, pool.map(stack.store.get, batch), strict=True):
                if record is not None and record.state == "succeeded":
                    pending.discard(task_id)
                    last_finish = max(last_finish, record.finished_at.timestamp())
    drain = last_finish - started if not pending else None
    stack.wait_idle(120)
    return {
        "tasks": len(ids),
        "submit_seconds": round(submitted, 1),
        "executions_started": _executions_started(stack) - executions_before,
        "worker_tasks_started": _tasks_started(stack) - tasks_before,
        "peak_parallel_tasks": peak,
        "drain_seconds": round(drain, 1) if drain is not None else None,
        "not_run_by_deadline": len(pending),
    }


def single_execution_run(stack: Stack) -> dict:
    """The same 10,000 queued first, then one execution (one task) drains them."""
    registry = load_task_modules(("example_tasks",))
    publisher = Publisher(stack.settings)
    ids, futures = [], []
    for _ in range(BURST):
        fields = {k: v for k, v in WORK.items() if k != "task_type"}
        envelope, _ = build_envelope(registry, "data_transformation", fields)
        data, attributes = envelope.to_message()
        futures.append(publisher.client.publish(stack.settings.topic_path, data, **attributes))
        ids.append(envelope.task_id)
    for future in futures:
        future.result(timeout=120)
    publisher.close()
    started = time.time()
    env = {**os.environ, "DISPATCH_ENABLED": "false"}
    subprocess.run([sys.executable, "-m", "taskctl", "worker"], env=env, check=True, timeout=900)
    with ThreadPoolExecutor(16) as pool:
        records = list(pool.map(stack.store.get, ids))
    done = [r for r in records if r is not None and r.state == "succeeded"]
    return {
        "tasks": len(done),
        "drain_seconds": round(max(r.finished_at.timestamp() for r in done) - started, 1),
    }


def delayed_run(stack: Stack) -> dict:
    session = requests.Session()
    now = datetime.now(UTC)
    ids = []
    for _ in range(DELAYED):
        run_at = now + timedelta(seconds=random.uniform(3, 20))
        body = {**WORK, "run_at": run_at.isoformat()}
        ids.append(
            session.post(f"{stack.url}/submit-task", json=body, timeout=10).json()["task_id"]
        )
    deadline = time.monotonic() + 90
    while True:
        records = [stack.store.get(t) for t in ids]
        if all(r is not None and r.state == "succeeded" for r in records):
            break
        if time.monotonic() > deadline:
            raise SystemExit("delayed tasks did not all run")
        time.sleep(0.5)
    published = []
    started = []
    early = 0
    for record in records:
        queued = next(h.at for h in record.history if h.state == "queued")
        published.append((queued - record.run_at).total_seconds())
        started.append((record.started_at - record.run_at).total_seconds())
        early += record.started_at < record.run_at
    return {
        "tasks": len(records),
        "published_late_p50_s": percentile(published, 0.5),
        "published_late_p99_s": percentile(published, 0.99),
        "started_late_p50_s": percentile(started, 0.5),
        "started_late_p99_s": percentile(started, 0.99),
        "started_early": early,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", default="latency,idle,burst,delayed")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "on_demand.json"))
    args = parser.parse_args()
    chosen = args.scenario.split(",")
    results: dict[str, list] = {name: [] for name in chosen}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as workdir, Stack(workdir) as stack:
            if "latency" in chosen:
                results["latency"].append(latency_run(stack))
            if "idle" in chosen:
                results["idle"].append(idle_run(stack))
            if "delayed" in chosen:
                results["delayed"].append(delayed_run(stack))
            if "burst" in chosen:
                burst = burst_run(stack)
                burst["single_execution"] = single_execution_run(stack)
                results["burst"].append(burst)
        print(f"run {run + 1}: " + json.dumps({k: v[-1] for k, v in results.items()}), flush=True)
    summary = {
        name: {
            key: statistics.median(r[key] for r in runs)
            for key in runs[0]
            if isinstance(runs[0][key], int | float)
        }
        | {"runs": runs}
        for name, runs in results.items()
    }
    print(json.dumps({k: {x: y for x, y in v.items() if x != "runs"} for k, v in summary.items()}))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2, default=str))


def _listing(stack: Stack) -> list:
    from google.cloud import run_v2

    return list(
        stack.jobs.executions_client.list_executions(
            request=run_v2.ListExecutionsRequest(
                parent=stack.jobs.job_path(stack.settings.worker_job_name), page_size=100
            )
        )
    )


def _executions_started(stack: Stack) -> int:
    return len(_listing(stack))


def _tasks_started(stack: Stack) -> int:
    return sum(e.task_count for e in _listing(stack))


if __name__ == "__main__":
    main()
