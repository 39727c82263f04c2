"""Helpers for the stand-in's tests: defining jobs of fake tasks, waiting, reading records."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import grpc
from google.cloud import run_v2

State = run_v2.Condition.State
Reason = run_v2.Condition.ExecutionReason
CompletionStatus = run_v2.ExecutionReference.CompletionStatus
FAKE_TASK = Path(__file__).with_name("fake_task.py")
# The stand-in's grace between SIGTERM and SIGKILL in these tests (Cloud Run's is 10 s).
TERM_GRACE = 1.0
# An environment variable the stand-in's own environment carries, and so its tasks'.
STANDIN_MARK = {"STANDIN_MARK": "from-the-stand-in", "LAYERED": "stand-in"}


@dataclass
class RunClients:
    channel: grpc.Channel
    jobs: object  # run_v2.JobsClient
    executions: object  # run_v2.ExecutionsClient
    operations: object  # google.api_core.operations_v1.OperationsClient


def fake_job(
    record_dir: Path,
    *args: str,
    task_count: int = 1,
    parallelism: int = 0,
    max_retries: int | None = 0,
    timeout_seconds: float | None = None,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
):
    """A run_v2.Job whose tasks run fake_task.py with args (recording into record_dir)."""
    from google.protobuf import duration_pb2

    task = run_v2.TaskTemplate(
        containers=[
            run_v2.Container(
                name="worker",
                image="ignored.example/worker:latest",
                command=[sys.executable, str(FAKE_TASK)],
                args=["--record-dir", str(record_dir), *args],
                env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
            )
        ],
    )
    if max_retries is not None:  # None: Cloud Run's default
        task.max_retries = max_retries
    if timeout_seconds is not None:
        task.timeout = duration_pb2.Duration(
            seconds=int(timeout_seconds), nanos=int(timeout_seconds % 1 * 1e9)
        )
    return run_v2.Job(
        labels=labels or {},
        template=run_v2.ExecutionTemplate(
            task_count=task_count,
            parallelism=parallelism,
            labels=labels or {},
            template=task,
        ),
    )


def create_job(clients: RunClients, parent: str, job_id: str, job):
    """Create job as job_id under parent; the Job the finished operation answers."""
    return clients.jobs.create_job(parent=parent, job=job, job_id=job_id).result(timeout=10)


def run(clients: RunClients, job_name: str, **overrides):
    """RunJob with overrides, ignoring the operation as the dispatcher does; the Execution."""
    request = {"name": job_name}
    if overrides:
        request["overrides"] = overrides
    return clients.jobs.run_job(request=request).metadata


def wait_until_done(clients: RunClients, execution_name: str, timeout: float = 20.0):
    """Poll GetExecution until completion_time is set; the finished Execution."""
    deadline = time.monotonic() + timeout
    while True:
        execution = clients.executions.get_execution(name=execution_name)
        if execution.completion_time:
            return execution
        assert time.monotonic() < deadline, f"{execution_name} still running after {timeout}s"
        time.sleep(0.05)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll predicate() until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.05)
    return value


def execution_id(execution_name: str) -> str:
    return execution_name.rsplit("/", 1)[1]


def execution_log(execution) -> str:
    """What the execution's log file (its log_uri) holds."""
    return Path(urlparse(execution.log_uri).path).read_text()


def records(record_dir: Path, execution_name: str) -> dict[tuple[int, int], dict]:
    """What each attempt of the execution's tasks recorded, by (index, attempt)."""
    prefix = execution_id(execution_name) + "-"
    found = {}
    for path in record_dir.glob(prefix + "*.json"):
        index, attempt = path.stem[len(prefix) :].split("-")
        found[int(index), int(attempt)] = json.loads(path.read_text())
    return found


def condition(execution, type_: str):
    """The execution's condition of this type."""
    (found,) = [c for c in execution.conditions if c.type_ == type_]
    return found


def process_gone(pid: int) -> bool:
    """Whether pid no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def kill_fake_task(pid: int) -> None:
    """SIGKILL pid if it is still one of our fake tasks (never a process that took its pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if FAKE_TASK.name.encode() in cmdline and not process_gone(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
