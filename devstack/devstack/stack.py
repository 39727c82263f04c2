"""`taskctl dev`: the whole stack on local emulators, as `make run` starts it.

Pub/Sub and GCS emulators, bootstrap, the API under gunicorn, and a worker execution
every few seconds, each a fresh process as Cloud Scheduler would start a job execution.
Ctrl+C (or SIGTERM) stops everything this started, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devstack.emulators import start_gcs_emulator, start_pubsub_emulator, wait_for_http
from devstack.emulators.process import spawn
from taskcore.settings import Settings


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_dev_stack(*, port: int, worker_interval: float, data_dir: str) -> None:
    """Start everything, print how to use it, and run scheduled worker executions until stopped."""
    from taskcore.bootstrap import bootstrap

    logs = Path(data_dir)
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        pubsub = stack.enter_context(
            start_pubsub_emulator(log_path=str(logs / "pubsub-emulator.log"))
        )
        _say(f"Pub/Sub emulator ({pubsub.kind}) at {pubsub.env_value}")
        gcs = stack.enter_context(start_gcs_emulator(log_path=str(logs / "gcs-emulator.log")))
        _say(f"GCS emulator at {gcs.env_value}")
        os.environ.update(pubsub.env)
        os.environ.update(gcs.env)
        os.environ["PORT"] = str(port)
        # The dashboard needs an admin key; locally one is made up for this run.
        os.environ.setdefault("ADMIN_API_KEYS", secrets.token_urlsafe(18))
        settings = Settings.from_env()
        bootstrap(settings)
        api = spawn(
            [
                sys.executable,
                "-m",
                "taskctl",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            None,
        )
        stack.callback(_terminate, api)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", 30, api)
        _banner(url, settings)
        while not stop.is_set():
            if api.poll() is not None:
                _say(f"the API exited with code {api.returncode}; stopping")
                break
            execution = subprocess.Popen(
                [sys.executable, "-m", "taskctl", "worker"],
                env={**os.environ, "CLOUD_RUN_EXECUTION": f"local-{int(time.time())}"},
            )
            while execution.poll() is None:
                if stop.wait(0.2):
                    _terminate(execution)
            stop.wait(worker_interval)
    _say("stopped: API, worker, emulators")


def _banner(url: str, settings: Settings) -> None:
    keys = "API keys are OFF (local only): anyone on this machine can submit."
    if settings.api_keys:
        keys = "API keys are ON: send Authorization: Bearer <key>."
    admin_key = sorted(settings.admin_api_keys)[0]
    _say(
        f"""
Task pipeline running locally.
  API:      {url}   ({keys})
  Admin:    {url}/admin?key={admin_key}
  Bucket:   gs://{settings.bucket_name} (GCS emulator)
  Worker:   one execution every few seconds, as Cloud Scheduler would run the job

Try:
  curl -s -X POST {url}/submit-task -H 'Content-Type: application/json' \\
       -d '{{"task_type":"data_transformation","dataset_size":100,"transformation":"aggregate"}}'
  curl -s {url}/tasks/<task_id>

Ctrl+C stops everything.
"""
    )


def _terminate(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM) if _own_group(proc) else proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _own_group(proc: subprocess.Popen) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False
