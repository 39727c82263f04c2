"""Choosing and starting the local emulators."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from dataclasses import dataclass

from devstack.emulators.google_pubsub import find_google_pubsub_emulator, google_pubsub_argv
from devstack.emulators.process import (
    EmulatorProcess,
    free_port,
    spawn,
    wait_for_http,
    wait_for_tcp,
)
from devstack.jobs.defaults import CLOUD_RUN_TERM_GRACE, HOST_ENV
from taskcore.errors import EmulatorError

log = logging.getLogger(__name__)

PUBSUB_CHOICE_ENV = "TASKCTL_PUBSUB_EMULATOR"
MONITORING_ENV = "MONITORING_EMULATOR_HOST"
_PYTHON_PUBSUB_MODULE = "devstack.emulators.pubsub"


def _python_pubsub_available() -> bool:
    return importlib.util.find_spec(_PYTHON_PUBSUB_MODULE) is not None


def choose_pubsub_emulator(choice: str | None = None) -> str:
    """'google' or 'python': forced by argument or TASKCTL_PUBSUB_EMULATOR, else what is installed."""
    choice = (choice or os.environ.get(PUBSUB_CHOICE_ENV) or "auto").lower()
    if choice not in ("auto", "google", "python"):
        raise EmulatorError(f"{PUBSUB_CHOICE_ENV} must be auto, google or python, not {choice!r}")
    if choice == "google" and find_google_pubsub_emulator() is None:
        raise EmulatorError(
            "Google's Pub/Sub emulator is not installed: install the Google Cloud SDK and "
            "`gcloud components install pubsub-emulator` (needs Java 11+), "
            f"or set {PUBSUB_CHOICE_ENV}=python"
        )
    if choice == "python" and not _python_pubsub_available():
        raise EmulatorError("the pure-Python Pub/Sub emulator is not part of this installation")
    if choice == "auto":
        if find_google_pubsub_emulator() is not None:
            choice = "google"
        elif _python_pubsub_available():
            choice = "python"
        else:
            raise EmulatorError(
                "no Pub/Sub emulator found: install the Google Cloud SDK with "
                "`gcloud components install pubsub-emulator` (needs Java 11+)"
            )
    return choice


def start_pubsub_emulator(
    *,
    choice: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: str | None = None,
    data_dir: str | None = None,
    timeout: float = 60.0,
) -> EmulatorProcess:
    """Start a Pub/Sub emulator on host:port and wait until it answers."""
    kind = choose_pubsub_emulator(choice)
    port = port or free_port(host)
    extra_env = {}
    if kind == "google":
        argv = google_pubsub_argv(find_google_pubsub_emulator(), host, port)
    else:
        argv = [sys.executable, "-m", _PYTHON_PUBSUB_MODULE, "--host", host, "--port", str(port)]
        if data_dir:
            argv += ["--data-dir", data_dir]
        # Ours also serves the subscriptions' backlog as Cloud Monitoring would.
        monitoring_port = free_port(host)
        argv += ["--monitoring-port", str(monitoring_port)]
        extra_env[MONITORING_ENV] = f"{host}:{monitoring_port}"
    log.info(
        "starting %s Pub/Sub emulator on %s:%d",
        kind,
        host,
        port,
        extra={"json_fields": {"emulator": kind}},
    )
    proc = spawn(argv, log_path)
    handle = EmulatorProcess(
        f"pubsub-{kind}",
        proc,
        host,
        port,
        "PUBSUB_EMULATOR_HOST",
        f"{host}:{port}",
        log_path,
        kind,
        extra_env,
    )
    try:
        if kind == "google":
            wait_for_http(f"http://{host}:{port}/", timeout, proc)
        else:
            wait_for_tcp(host, port, timeout, proc)
    except BaseException:
        handle.stop()
        raise
    return handle


def start_gcs_emulator(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: str | None = None,
    data_dir: str | None = None,
    timeout: float = 30.0,
) -> EmulatorProcess:
    """Start the local GCS emulator (gcp-storage-emulator with our fixes) and wait until it answers."""
    port = port or free_port(host)
    argv = [sys.executable, "-m", "devstack.emulators.gcs", "--host", host, "--port", str(port)]
    if data_dir:
        argv += ["--data-dir", data_dir]
    proc = spawn(argv, log_path)
    handle = EmulatorProcess(
        "gcs", proc, host, port, "STORAGE_EMULATOR_HOST", f"http://{host}:{port}", log_path, "gcs"
    )
    try:
        wait_for_http(f"http://{host}:{port}/", timeout, proc)
    except BaseException:
        handle.stop()
        raise
    return handle


_JOBS_STANDIN_MODULE = "devstack.jobs"


@dataclass
class JobsStandinProcess(EmulatorProcess):
    """The Cloud Run Jobs stand-in: stopping it waits for its tasks' grace before SIGKILL."""

    work_dir: str = ""
    term_grace: float = CLOUD_RUN_TERM_GRACE

    def stop(self, timeout: float | None = None) -> None:
        """Stop the stand-in, which stops every task it started (SIGTERM, grace, SIGKILL)."""
        super().stop(self.term_grace + 10.0 if timeout is None else timeout)


def start_jobs_standin(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: str | None = None,
    work_dir: str | None = None,
    term_grace: float = CLOUD_RUN_TERM_GRACE,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> JobsStandinProcess:
    """Start the local Cloud Run Jobs stand-in on host:port and wait until it answers.

    Its tasks inherit its environment: this process's at the time of the call (emulator hosts
    included) with env on top. Their logs go under work_dir (a new temporary directory if not
    given); term_grace is the SIGTERM-to-SIGKILL time for tasks past their timeout or cancelled.
    """
    port = port or free_port(host)
    work_dir = work_dir or tempfile.mkdtemp(prefix="cloud-run-jobs-")
    argv = [
        sys.executable,
        "-m",
        _JOBS_STANDIN_MODULE,
        "--host",
        host,
        "--port",
        str(port),
        "--work-dir",
        work_dir,
        "--term-grace",
        str(term_grace),
    ]
    log.info("starting the Cloud Run Jobs stand-in on %s:%d", host, port)
    proc = spawn(argv, log_path, env)
    handle = JobsStandinProcess(
        "cloud-run-jobs",
        proc,
        host,
        port,
        HOST_ENV,
        f"{host}:{port}",
        log_path,
        "python",
        work_dir=work_dir,
        term_grace=term_grace,
    )
    try:
        wait_for_tcp(host, port, timeout, proc)
    except BaseException:
        handle.stop()
        raise
    return handle
