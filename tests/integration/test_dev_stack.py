"""`make run` (taskctl dev): the whole stack comes up, processes a task, and stops cleanly;
taskctl finds it with nothing exported; its data outlives a restart; a busy port or a dying
API is an error that says why."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devstack.emulators import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 90


def descendants(pid: int) -> set[int]:
    """Every process below pid, from the process table."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def worker_processes(pid: int) -> list[int]:
    """The `taskctl worker` processes running below pid."""
    found = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if alive(child) and b"taskctl" in cmdline and b"worker" in cmdline:
            found.append(child)
    return found


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a developer's shell: no emulator exported, this data folder."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.update(TASKCTL_DATA_DIR=str(data_dir), **extra)
    return env


@dataclass
class Stack:
    proc: subprocess.Popen
    url: str
    data_dir: Path

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Signal the stack, wait for it; its exit code and everything it wrote to stderr."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        return code, self.proc.stderr.read().decode()


@contextlib.contextmanager
def dev_stack(data_dir: Path, *args: str) -> Iterator[Stack]:
    """`taskctl dev` on a free port until it says where it runs (stack.json, written once its
    API answers and its jobs are defined); it and its children always die."""
    port = free_port()
    env = clean_env(data_dir, IDLE_TIMEOUT_SECONDS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskctl", "dev", "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    children: set[int] = set()
    try:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if (data_dir / "stack.json").exists() and requests.get(
                    f"{url}/health", timeout=1
                ).ok:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        children = descendants(proc.pid)
        yield Stack(proc, url, data_dir)
    finally:
        children |= descendants(proc.pid) if proc.poll() is None else set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_until_succeeded(url: str, task_id: str, seconds: float = 60) -> str | None:
    deadline, state = time.monotonic() + seconds, None
    while time.monotonic() < deadline and state != "succeeded":
        status = requests.get(f"{url}/tasks/{task_id}", timeout=5)
        state = status.json().get("state") if status.ok else None
        time.sleep(0.3)
    return state


def submit(url: str) -> str:
    task = {"task_type": "data_transformation", "dataset_size": 10}
    response = requests.post(f"{url}/submit-task", json=task, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def test_dev_stack_serves_processes_a_task_and_stops_everything_on_ctrl_c(tmp_path):
    with dev_stack(tmp_path) as stack:
        idle_at_start = worker_processes(stack.proc.pid)
        task_id = submit(stack.url)
        state = wait_until_succeeded(stack.url, task_id)
        record = requests.get(f"{stack.url}/tasks/{task_id}", timeout=5).json()
        children = descendants(stack.proc.pid)
        recorded = json.loads((tmp_path / "stack.json").read_text())
        # A developer's shell elsewhere in the checkout, nothing exported: taskctl finds it.
        listing = subprocess.run(
            [sys.executable, "-m", "taskctl", "dlq", "list", "--json"],
            cwd=ROOT / "docs",
            env=clean_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        code, banner = stack.stop()

    assert idle_at_start == [], "no worker runs while the queues are empty"
    assert state == "succeeded", "an execution started on demand processed the task"
    assert record["execution"].startswith("background-worker-"), "one of the stand-in's"
    assert list((tmp_path / "logs" / "jobs").iterdir()), "its worker's log is kept"
    assert len(children) >= 3, "emulators and the API run as child processes"
    assert recorded["api_url"] == stack.url and "PUBSUB_EMULATOR_HOST" in recorded["env"]
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["in_dlq"] == 0
    assert f"using the local stack of `make run` (API {stack.url})" in listing.stderr
    assert code == 0
    assert f"{stack.url}/submit-task" in banner and "curl" in banner
    assert str(tmp_path / "logs" / "api.log") in banner, "the banner names the API's log"
    assert not (tmp_path / "stack.json").exists(), "a stopped stack is found no more"
    time.sleep(0.5)
    orphans = [pid for pid in children if alive(pid)]
    assert orphans == [], "Ctrl+C leaves no orphan processes"


def test_a_busy_port_fails_at_once_naming_the_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "taskctl", "dev", "--port", str(port)],
            cwd=ROOT,
            env=clean_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        seconds = time.monotonic() - started

    assert run.returncode != 0
    assert f"port {port} is already in use by pid {os.getpid()}" in run.stderr
    assert "Task pipeline running locally" not in run.stderr, "no banner for a stack not running"
    assert seconds < 10, "refused before any emulator starts"


def test_local_data_survives_a_restart(tmp_path):
    with dev_stack(tmp_path) as stack:
        task_id = submit(stack.url)
        assert wait_until_succeeded(stack.url, task_id) == "succeeded"
        assert stack.stop()[0] == 0

    with dev_stack(tmp_path) as again:
        record = requests.get(f"{again.url}/tasks/{task_id}", timeout=5)
        outputs = requests.get(f"{again.url}/tasks/{task_id}/outputs", timeout=5)
        again.stop()

    assert record.status_code == 200 and record.json()["state"] == "succeeded"
    assert outputs.status_code == 200 and outputs.json()["outputs"]


def test_an_api_that_dies_stops_the_stack_non_zero_with_its_reason(tmp_path):
    with dev_stack(tmp_path, "--in-memory") as stack:
        api = json.loads((tmp_path / "stack.json").read_text())
        gunicorn = [
            pid
            for pid in descendants(stack.proc.pid)
            if b"--fd" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(min(gunicorn), signal.SIGKILL)  # the gunicorn master
        code = stack.proc.wait(timeout=30)
        said = stack.proc.stderr.read().decode()

    assert code == 1
    assert "the API exited with code -9; stopping" in said
    assert api["api_log"] in said and "Listening at" in said, "with the end of its log"


def test_the_local_stack_is_idle_when_its_queues_are_empty(tmp_path):
    with dev_stack(tmp_path, "--in-memory") as stack:
        task_id = submit(stack.url)
        assert wait_until_succeeded(stack.url, task_id) == "succeeded"
        # The execution drains the queue, waits IDLE_TIMEOUT_SECONDS (1 here) and exits.
        deadline = time.monotonic() + 30
        while worker_processes(stack.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        drained_in = time.monotonic() - deadline + 30
        # Then the ticks go on twice a second, and start nothing.
        seen = set()
        for _ in range(25):
            seen.update(worker_processes(stack.proc.pid))
            time.sleep(0.2)
        stack.stop()

    assert drained_in < 30, "the execution exits once the queue is empty"
    assert seen == set(), "no worker process starts while the queues stay empty"
