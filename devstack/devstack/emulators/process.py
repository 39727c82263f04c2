"""A child emulator process: start it in its own process group, wait until it answers, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from taskcore.errors import EmulatorError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def temporary_environ(values: Mapping[str, str]):
    """Set environment variables for the block (clients read emulator hosts at creation)."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def temporary_env(name: str, value: str):
    """Set one environment variable for the block."""
    return temporary_environ({name: value})


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll url until it answers any HTTP status, the process dies, or timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmulatorError(
                f"emulator exited with code {proc.returncode} before answering {url}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise EmulatorError(f"emulator did not answer {url} within {timeout:.0f}s")


@dataclass
class EmulatorProcess:
    """A running emulator: its process, address and the environment variable that points at it."""

    name: str
    proc: subprocess.Popen
    host: str
    port: int
    env_var: str
    env_value: str
    log_path: str | None = None
    kind: str = ""
    # Other endpoints it serves, by the variable that points at them (MONITORING_EMULATOR_HOST).
    extra_env: dict[str, str] = field(default_factory=dict)
    _stopped: bool = field(default=False, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The environment variables that point clients at this emulator."""
        return {self.env_var: self.env_value, **self.extra_env}

    def is_running(self) -> bool:
        """Whether the process is still alive."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the emulator and everything it started: SIGTERM, then SIGKILL."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        # The Java emulator forks a JVM in the same group; make sure none survives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def spawn(
    argv: list[str],
    log_path: str | None,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen:
    """Start argv in a new process group, its output to log_path (or discarded)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
        )
    finally:
        if log_path:
            out.close()


def wait_for_tcp(
    host: str, port: int, timeout: float, proc: subprocess.Popen | None = None
) -> None:
    """Poll host:port until it accepts a connection, the process dies, or timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmulatorError(f"emulator exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise EmulatorError(f"emulator did not listen on {host}:{port} within {timeout:.0f}s")
