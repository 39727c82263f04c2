"""ProxyProcess: a FaultProxy in a child process, for a caller whose own threads are busy.

A FaultProxy relays on a thread of the process that made it, so it competes for that
process's GIL: a campaign driver that also generates load slows its proxies down (measured
with 8 writer threads in the same process: 545 GCS writes/s through a thread, 672 through
a process, 737 direct). ProxyProcess has the same methods and properties, and runs the
proxy in a child process (`python -m chaos.proxy_process`: a fresh interpreter, so neither
a fork of a threaded caller nor a re-import of the caller's main module) that obeys calls
sent over a socket pair. The child exits when stopped, and also when the caller dies (its
end of the socket pair closes), so no proxy outlives its campaign.

    with ProxyProcess(emulator.env_value, name="gcs") as proxy:
        proxy.blackhole(duration=5)
        proxy.stats()
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

from chaos.proxy import FaultProxy, ProxyEndpoint, ProxyFault, ProxyStats

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


def _serve(conn, upstream, name: str, host: str, port: int) -> None:
    """The child: run one FaultProxy and answer (method, args, kwargs) calls until told to stop."""
    try:
        proxy = FaultProxy(upstream, name=name, host=host, port=port).start()
    except Exception as exc:
        conn.send((False, exc))
        return
    conn.send((True, proxy.port))
    try:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return  # the caller is gone
            if method == "stop":
                break
            try:
                conn.send((True, getattr(proxy, method)(*args, **kwargs)))
            except Exception as exc:
                conn.send((False, exc))
    finally:
        proxy.stop()
    conn.send((True, None))


class ProxyProcess(ProxyEndpoint):
    """A FaultProxy in a child process; see the module docstring and chaos.proxy."""

    def __init__(self, upstream: str | tuple[str, int], **where) -> None:
        super().__init__(upstream, **where)
        self._process: subprocess.Popen | None = None
        self._conn = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> ProxyProcess:
        ours, theirs = socket.socketpair()
        host, port = self.upstream
        argv = [sys.executable, "-m", "chaos.proxy_process", str(theirs.fileno())]
        argv += [host, str(port), self.name, self.host, str(self._requested_port)]
        try:
            self._process = subprocess.Popen(
                argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        if not self._conn.poll(_START_TIMEOUT):
            self._kill()
            raise RuntimeError(f"proxy process {self.name} did not start")
        self.port = self._answer(self._conn.recv())
        return self

    def stop(self) -> None:
        """Stop the proxy and its process; safe to call twice."""
        if self._process is None:
            return
        with contextlib.suppress(RuntimeError, OSError, EOFError):  # already gone
            self._call("stop")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=_STOP_TIMEOUT)
        self._kill()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def refuse(self, duration: float | None = None) -> None:
        self._call("refuse", duration)

    def blackhole(self, duration: float | None = None) -> None:
        self._call("blackhole", duration)

    def delay(
        self, to_upstream: float, to_client: float | None = None, *, duration: float | None = None
    ) -> None:
        self._call("delay", to_upstream, to_client, duration=duration)

    def reset(self) -> int:
        return self._call("reset")

    def clear(self, kind: ProxyFault | str | None = None) -> None:
        self._call("clear", kind)

    def active_faults(self) -> set[ProxyFault]:
        return self._call("active_faults")

    def stats(self) -> ProxyStats:
        return self._call("stats")

    def _call(self, method: str, *args, **kwargs):
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"proxy process {self.name} is not running")
            self._conn.send((method, args, kwargs))
            return self._answer(self._conn.recv())

    @staticmethod
    def _answer(reply):
        ok, value = reply
        if not ok:
            raise value
        return value

    def _kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=_STOP_TIMEOUT)
        if self._conn is not None:
            self._conn.close()
        self._process = None


if __name__ == "__main__":
    fd, upstream_host, upstream_port, name, host, port = sys.argv[1:]
    _serve(Connection(int(fd)), (upstream_host, int(upstream_port)), name, host, int(port))
