"""Running the real API server (`python -m task_api.server`, gunicorn) for a test, and stopping it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from devstack.emulators import free_port
from taskcore.settings import Settings
from tests.integration.helpers import settings_env


@dataclass
class ApiProcess:
    """A running API server: its base URL and process (its own process group)."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the server (as Cloud Run would), SIGKILL it after timeout; its exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_api(
    settings: Settings, log_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[ApiProcess]:
    """Start the API on a free port with these settings; always stopped on exit."""
    port = free_port()
    log_path = log_dir / f"api-{port}.log"
    env = {**os.environ, **settings_env(settings), **(extra_env or {})}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "task_api.server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers stop with the master
        )
    api = ApiProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, api.log()
            try:
                if requests.get(f"{api.url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the API did not answer /health in 30 s"
            time.sleep(0.1)
        yield api
    finally:
        api.stop()
