"""`taskctl dev`: the whole stack on local emulators, as `make run` starts it.

Pub/Sub and GCS emulators, bootstrap, the API under gunicorn, and a worker execution
every few seconds, each a fresh process as Cloud Scheduler would start a job execution.
Ctrl+C (or SIGTERM) stops everything this started, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
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
        # The dashboard needs an admin key; locally one is made up for this run, and kept in
        # a file only this user can read: never in a URL, the banner or a log.
        key_file = None
        if not os.environ.get("ADMIN_API_KEYS"):
            os.environ["ADMIN_API_KEYS"] = secrets.token_urlsafe(18)
            key_file = _write_private(logs / "admin-key", os.environ["ADMIN_API_KEYS"])
        settings = Settings.from_env()
        bootstrap(settings)
        _seed_sample_input(settings)
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
        _banner(url, settings, _sign_in_link(url, sorted(settings.admin_api_keys)[0]), key_file)
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


def _write_private(path: Path, text: str) -> Path:
    """Write text to path, readable and writable by this user only."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text + "\n")
    return path


def _sign_in_link(url: str, admin_key: str) -> dict | None:
    """A one-time dashboard sign-in link from the API (the key goes in a header), or None."""
    asked = urllib.request.Request(
        f"{url}/admin/sign-in-links", method="POST", headers={"X-API-Key": admin_key}
    )
    try:
        with urllib.request.urlopen(asked, timeout=10) as answer:
            link = json.load(answer)
        return {"url": str(link["url"]), "minutes": int(link["expires_in"]) // 60}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _say(f"no sign-in link ({type(exc).__name__}): sign in with the form at {url}/admin")
        return None


SAMPLE_TEXT = b"""The recipe's sample input.
file_processing reads uploads/sample.txt when a task names no file:
  curl -X POST localhost:8080/submit-file-task
"""


def _seed_sample_input(settings: Settings) -> None:
    """uploads/sample.txt, the file a file task reads by default, unless it exists already."""
    from google.api_core import exceptions as gexc

    from taskcore.clients import bucket

    with contextlib.suppress(gexc.PreconditionFailed):
        bucket(settings).blob("uploads/sample.txt").upload_from_string(
            SAMPLE_TEXT, content_type="text/plain", if_generation_match=0
        )


def _banner(url: str, settings: Settings, sign_in_link: dict | None, key_file: Path | None) -> None:
    keys = "API keys are OFF (local only): anyone on this machine can submit."
    if settings.api_keys:
        keys = "API keys are ON: send Authorization: Bearer <key>."
    where_key = f"the key in {key_file}" if key_file else "your ADMIN_API_KEYS key"
    admin = f"{url}/admin, signing in with {where_key}"
    if sign_in_link:
        admin = (
            f"{sign_in_link['url']}\n            (one-time link, valid "
            f"{sign_in_link['minutes']} minutes; afterwards {admin})"
        )
    _say(
        f"""
Task pipeline running locally.
  API:      {url}   ({keys})
  Admin:    {admin}
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
