"""The campaign's pipeline: its settings, the API server process, and the proof that every
process the campaign started is gone at the end.

The API runs as `python -m taskctl api` in a process group of its own (gunicorn's master
and workers), with the settings' environment only, like the worker executions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.emulators import free_port, wait_for_http
from devstack.emulators.process import spawn
from taskcore.settings import Settings, env_var_names

TASK_MODULES = ("example_tasks", "chaos.tasks")
API_START_SECONDS = 60.0
API_STOP_SECONDS = 15.0


def campaign_settings(seed: int, pubsub_host: str, gcs_url: str, **overrides) -> Settings:
    """Settings for one campaign: its own resource names, chaos task types, short waits.

    The waits follow tests/conftest.py's `make_test_settings` (10 s ack deadline, 5 s
    claims, backoff 0.1-0.5 s), so leases, claims and retries all happen within seconds.
    """
    suffix = f"{seed}-{uuid.uuid4().hex[:6]}"
    values = dict(
        project_id="chaos-campaign",
        topic_name=f"chaos-{suffix}",
        subscription_name=f"chaos-{suffix}-worker",
        dlq_topic_name=f"chaos-{suffix}-dlq",
        dlq_subscription_name=f"chaos-{suffix}-dlq-sub",
        bucket_name=f"chaos-{suffix}",
        task_modules=TASK_MODULES,
        ack_deadline_seconds=10,
        retry_min_backoff_seconds=0.1,
        retry_max_backoff_seconds=0.5,
        claim_seconds=5,
        idle_timeout_seconds=2.0,
        worker_concurrency=16,
        # Executions end (and are started again) every minute and a half, as scheduled
        # Cloud Run Job executions would; storage or Pub/Sub down for 45 s ends one (exit 2).
        run_budget_seconds=90.0,
        infra_retry_seconds=45.0,
        shutdown_grace_seconds=7.0,
        api_workers=2,
        api_threads=16,
        pubsub_emulator_host=pubsub_host,
        storage_emulator_host=gcs_url,
    )
    values.update(overrides)
    return Settings(**values)


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment minus every setting, plus settings' own."""
    env = {k: v for k, v in os.environ.items() if k not in set(env_var_names())}
    env.update(settings.as_environ())
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ApiServer:
    """The API as a process group: its URL, process and log."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, settings: Settings, log_dir: Path) -> ApiServer:
        """Start `python -m taskctl api` on a free port and wait until /health answers."""
        port = free_port()
        log_path = log_dir / "api.log"
        argv = [sys.executable, "-m", "taskctl", "api"]
        proc = spawn(
            [*argv, "--host", "127.0.0.1", "--port", str(port)], str(log_path), child_env(settings)
        )
        server = cls(f"http://127.0.0.1:{port}", proc, log_path)
        try:
            wait_for_http(f"{server.url}/health", API_START_SECONDS, proc)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """SIGTERM the group (gunicorn finishes requests), SIGKILL it after a grace; reap."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=API_STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def groups_alive(groups: dict[str, int]) -> list[str]:
    """Which of these process groups (name → pgid) still hold a live (non-zombie) process."""
    members: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z":
            members.setdefault(int(pgrp), []).append(int(entry.name))
    return [
        f"{name} (process group {pgid}: pids {members[pgid]})"
        for name, pgid in sorted(groups.items())
        if pgid in members
    ]
