"""`make run` (taskctl dev): the whole stack comes up, processes a task, and stops cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devstack.emulators import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


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


def test_dev_stack_serves_processes_a_task_and_stops_everything_on_ctrl_c(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.update(
        WORKER_INTERVAL_SECONDS="1", IDLE_TIMEOUT_SECONDS="1", TASKCTL_DATA_DIR=str(tmp_path)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskctl", "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        response = requests.post(
            f"{url}/submit-task",
            json={"task_type": "data_transformation", "dataset_size": 10},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        state = None
        while time.monotonic() < deadline and state != "succeeded":
            status = requests.get(f"{url}/tasks/{task_id}", timeout=5)
            state = status.json().get("state") if status.ok else None
            time.sleep(0.3)
        assert state == "succeeded", "a scheduled worker execution processed the task"
        children = descendants(proc.pid)
        assert len(children) >= 3, "emulators and the API run as child processes"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        banner = proc.stderr.read().decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert f"{url}/submit-task" in banner and "curl" in banner
    time.sleep(0.5)
    orphans = [pid for pid in children if alive(pid)]
    assert orphans == [], "Ctrl+C leaves no orphan processes"
