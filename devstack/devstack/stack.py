"""`taskctl dev`: the whole stack on local emulators, as `make run` starts it.

Pub/Sub and GCS emulators, bootstrap, the Cloud Run Jobs stand-in holding one worker job
per queue (devstack.local_jobs), and the API under gunicorn with its dispatcher on. The API
starts executions through the stand-in exactly as it does through Cloud Run; a ticker calls
its POST /internal/tick twice a second, as Cloud Scheduler does every minute. Nothing runs
while the queues are empty: no worker process, no polling. Ctrl+C (or SIGTERM) stops
everything this started, and nothing else.

Everything it keeps is under the data folder (`.local/`, git-ignored):

    data/pubsub, data/gcs   emulator state, kept across restarts (`make clean-data` wipes it)
    logs/                   the API's and the emulators' output; logs/jobs/ each worker's
    admin-key               the dashboard key made up for this run (owner-only)
    stack.json              where this running stack answers (taskctl finds it there)

The API's port is bound here before anything starts, so a busy port is an error at once
that names it (devstack.ports); the API, should it die, says why from its log.
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
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.emulators import (
    start_gcs_emulator,
    start_jobs_standin,
    start_pubsub_emulator,
    wait_for_http,
)
from devstack.emulators.process import spawn
from devstack.local_jobs import SAFETY_NET_SECONDS, Ticker, define_worker_jobs
from devstack.ports import listening_socket
from devstack.state import StackState, read_state, remove_state, state_path, write_state
from taskcore.errors import EmulatorError
from taskcore.settings import Settings

API_HOST = "127.0.0.1"
API_START_SECONDS = 30
LOG_TAIL_LINES = 25


class StackError(EmulatorError):
    """Raised when the local stack cannot start or its API stops: the message says why."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DevFolders:
    """The data folder's layout."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def api_log(self) -> Path:
        return self.logs / "api.log"

    def make(self, persist: bool) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if persist:
            (self.data / "pubsub").mkdir(parents=True, exist_ok=True)
            (self.data / "gcs").mkdir(parents=True, exist_ok=True)


def run_dev_stack(
    *,
    port: int,
    data_dir: str,
    persist: bool = True,
    safety_net_seconds: float = SAFETY_NET_SECONDS,
) -> int:
    """Start everything, print how to use it, and tick the dispatcher until stopped.

    Returns the exit code: 0 after Ctrl+C or SIGTERM, 1 when the API stopped by itself.
    Raises StackError (or EmulatorError) when the stack cannot start.
    """
    from taskcore.bootstrap import bootstrap

    folders = DevFolders(Path(data_dir))
    running = read_state(state_path(folders.root))
    if running is not None and running.alive() and running.pid != os.getpid():
        raise StackError(
            f"a local stack is already running (pid {running.pid}, API at {running.api_url}): "
            "stop it first (Ctrl+C in its terminal)"
        )
    # Bound before anything starts: a busy port stops us now, naming the port.
    api_socket = listening_socket(API_HOST, port)
    folders.make(persist)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        stack.callback(api_socket.close)
        pubsub = stack.enter_context(
            start_pubsub_emulator(
                log_path=str(folders.logs / "pubsub-emulator.log"),
                data_dir=str(folders.data / "pubsub") if persist else None,
            )
        )
        _say(f"Pub/Sub emulator ({pubsub.kind}) at {pubsub.env_value}")
        gcs = stack.enter_context(
            start_gcs_emulator(
                log_path=str(folders.logs / "gcs-emulator.log"),
                data_dir=str(folders.data / "gcs") if persist else None,
            )
        )
        _say(f"GCS emulator at {gcs.env_value}")
        os.environ.update(pubsub.env)
        os.environ.update(gcs.env)
        os.environ["PORT"] = str(port)
        # Executions on demand, as deployed: the API's dispatcher starts them, workers report
        # their lag and mark a queue drained (both sides read DISPATCH_ENABLED).
        os.environ["DISPATCH_ENABLED"] = "true"
        # The dashboard needs an admin key; locally one is made up for this run, and kept in
        # a file only this user can read: never in a URL, the banner or a log.
        key_file = None
        if not os.environ.get("ADMIN_API_KEYS"):
            os.environ["ADMIN_API_KEYS"] = secrets.token_urlsafe(18)
            key_file = _write_private(folders.root / "admin-key", os.environ["ADMIN_API_KEYS"])
        _put_task_modules_on_path()
        settings = Settings.from_env()
        registry = _task_registry(settings)
        bootstrap(settings)
        _seed_sample_input(settings)
        # Its workers inherit this environment: the emulators, DISPATCH_ENABLED, the keys.
        jobs = stack.enter_context(
            start_jobs_standin(
                log_path=str(folders.logs / "cloud-run-jobs.log"),
                work_dir=str(folders.logs / "jobs"),
            )
        )
        os.environ.update(jobs.env)
        settings = Settings.from_env()
        job_names = define_worker_jobs(jobs.env_value, settings, registry)
        _say(f"Cloud Run Jobs stand-in at {jobs.env_value}: {len(job_names)} worker job(s)")
        api = _start_api(api_socket, folders.api_log)
        stack.callback(_terminate, api)
        api_socket.close()  # the API holds it now
        url = f"http://{API_HOST}:{port}"
        _wait_for_api(url, api, folders.api_log)
        write_state(
            folders.root,
            StackState(
                pid=os.getpid(),
                api_url=url,
                project_id=settings.project_id,
                env={**pubsub.env, **gcs.env, **jobs.env},
                data_dir=str(folders.root.resolve()),
                api_log=str(folders.api_log.resolve()),
                admin_key_file=str(key_file.resolve()) if key_file else None,
            ),
        )
        stack.callback(remove_state, folders.root, os.getpid())
        link = _sign_in_link(url, sorted(settings.admin_api_keys)[0])
        ticker = Ticker(
            f"{url}/internal/tick",
            jobs.env_value,
            job_names,
            safety_net_seconds=safety_net_seconds,
        ).start()
        stack.callback(ticker.stop)
        _banner(url, settings, link, key_file, folders, persist)
        code = _watch_api(api, stop, folders.api_log)
    _say("stopped: API, workers, emulators")
    return code


def _put_task_modules_on_path(folder: Path = Path("tasks")) -> None:
    """Your task modules (`tasks/` in the checkout) importable by name here and in every
    process the stack starts, as `make run` and the images arrange it."""
    if not folder.is_dir():
        return
    path = str(folder.resolve())
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if path not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([path, *entries])
    if path not in sys.path:
        sys.path.insert(0, path)


def _task_registry(settings: Settings):
    """The declared task types (TASK_MODULES): their queues are the jobs to define."""
    from taskcore.errors import ConfigurationError
    from taskcore.tasks import load_task_modules

    try:
        return load_task_modules(settings.task_modules)
    except ConfigurationError as exc:
        raise StackError(str(exc)) from None


def _start_api(api_socket, log_path: Path) -> subprocess.Popen:
    fd = api_socket.fileno()
    argv = [sys.executable, "-m", "taskctl", "api", "--fd", str(fd)]
    return spawn(argv, str(log_path), pass_fds=(fd,))


def _wait_for_api(url: str, api: subprocess.Popen, log_path: Path) -> None:
    try:
        wait_for_http(f"{url}/health", API_START_SECONDS, api)
    except EmulatorError:
        code = api.poll()
        why = f"exited with code {code}" if code is not None else "did not answer in time"
        raise StackError(f"the API {why}; the end of {log_path}:\n{_tail(log_path)}") from None


def _watch_api(api, stop: threading.Event, api_log: Path) -> int:
    """Wait until stopped (0), or until the API dies (1, with the end of its log)."""
    while not stop.wait(0.5):
        if api.poll() is not None:
            _say(
                f"the API exited with code {api.returncode}; stopping. The end of {api_log}:\n"
                + _tail(api_log)
            )
            return 1
    return 0


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "  (no log)"
    return "\n".join("  " + line for line in text) or "  (empty)"


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


def _banner(
    url: str,
    settings: Settings,
    sign_in_link: dict | None,
    key_file: Path | None,
    folders: DevFolders | None = None,
    persist: bool = True,
) -> None:
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
    files = ""
    if folders is not None:
        kept = (
            f"{folders.data} (kept across restarts; `make clean-data` wipes it)"
            if persist
            else "in memory (gone when this stops)"
        )
        files = f"""  Data:     {kept}
  Logs:     {folders.api_log} (API), {folders.logs}/*-emulator.log
"""
    _say(
        f"""
Task pipeline running locally.
  API:      {url}   ({keys})
  Admin:    {admin}
  Bucket:   gs://{settings.bucket_name} (GCS emulator)
  Workers:  started on demand by the API's dispatcher, through the Cloud Run Jobs stand-in;
            none runs while the queues are empty (their logs: {folders.logs / "jobs" if folders else "-"})
{files}
Try:
  curl -s -X POST {url}/submit-task -H 'Content-Type: application/json' \\
       -d '{{"task_type":"data_transformation","dataset_size":100,"transformation":"aggregate"}}'
  curl -s {url}/tasks/<task_id>
  .venv/bin/taskctl dlq list      (taskctl finds this stack by itself, from this checkout)

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
