"""FaultProxy: a TCP proxy in front of one upstream, with network faults switched at runtime.

    with FaultProxy("127.0.0.1:8085", name="pubsub") as proxy:
        settings = settings.replace(pubsub_emulator_host=proxy.address)
        proxy.blackhole(duration=5.0)    # calls hang until their own deadlines, then resume
        proxy.delay(0.2, 0.05)           # +200 ms towards the upstream, +50 ms back, until cleared
        proxy.clear()
        proxy.reset()                    # every open connection gets RST, mid-stream
        print(proxy.stats())

It relays bytes and knows nothing of what they mean, so it carries gRPC over HTTP/2 (a
client to the Pub/Sub emulator) as well as HTTP/1.1 keep-alive (a client to the GCS
emulator). It listens on 127.0.0.1 on a free port and runs an asyncio event loop on its
own thread; every public method may be called from any thread, and returns once the
fault is in effect.

The faults (kinds in `ProxyFault`); several may hold at once, refuse wins over the rest:

- refuse: connecting fails with ECONNREFUSED (the listening socket stops listening but
  keeps its port), and open connections are closed as a dying server's would be (FIN, or
  RST where the kernel still holds unread bytes).
- blackhole: connections are accepted, but nothing moves in either direction, on new or
  open connections. Bytes wait (the kernel buffers fill and senders stall, as in a
  partition) and flow again, in order, when the blackhole ends; so do FINs.
- delay: latency added per direction; each chunk leaves no earlier than its arrival plus
  the delay, and never before the chunk ahead of it.
- reset: every open connection is reset at once, both ways (SO_LINGER 0, so RST), and
  traffic passes again; it is an instant, not a state.

Refuse, blackhole and delay hold for `duration` seconds or until `clear()`; applying a
kind that already holds restarts it. `stats()` counts connections, bytes each way, and per
kind the faults applied and the seconds they held.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import logging
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from chaos.relay import Connection, FaultState, RelayCounters

log = logging.getLogger(__name__)

# Pending connections the kernel completes before we accept them.
_BACKLOG = 512
# Connections accepted per wake-up, so one burst cannot starve relaying.
_ACCEPTS_PER_WAKEUP = 64
# How long a call from another thread waits for the loop to act on it.
_CALL_TIMEOUT = 10.0


class ProxyFault(enum.StrEnum):
    """A network fault the proxy can inject."""

    REFUSE = "refuse"
    BLACKHOLE = "blackhole"
    DELAY = "delay"
    RESET = "reset"


@dataclass(frozen=True)
class FaultTally:
    """How often one kind of fault was applied and how long it held in total."""

    applied: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of what the proxy has relayed and injected since it started."""

    connections_accepted: int
    connections_open: int
    connections_reset: int
    connections_closed_by_refuse: int
    upstream_connect_failures: int
    bytes_to_upstream: int
    bytes_to_client: int
    held_to_upstream: int
    held_to_client: int
    faults: dict[ProxyFault, FaultTally] = field(default_factory=dict)


@dataclass
class _Holding:
    """A fault in effect: when it began and the timer that ends it, if it has a duration."""

    started: float
    timer: asyncio.TimerHandle | None


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """(host, port) from "host:port", "http://host:port" (as STORAGE_EMULATOR_HOST) or a tuple."""
    if isinstance(address, tuple):
        return address
    parsed = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise ValueError(f"{address!r} is not host:port")
    return parsed.hostname, parsed.port


def _bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket bound to an explicit port.

    Binding port 0 would let the kernel release the port when listening stops (refuse),
    so a free port is found first and then bound by number; a lost race is retried.
    """
    for _attempt in range(20):
        chosen = port
        if not chosen:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((host, 0))
                chosen = probe.getsockname()[1]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, chosen))
        except OSError as exc:
            listener.close()
            if port or exc.errno != errno.EADDRINUSE:
                raise
            continue
        listener.listen(_BACKLOG)
        listener.setblocking(False)
        return listener
    raise OSError(errno.EADDRINUSE, f"no free port found on {host}")


class ProxyEndpoint:
    """Where a proxy listens (host, and port once started) and what it relays to."""

    def __init__(
        self,
        upstream: str | tuple[str, int],
        *,
        name: str = "proxy",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.name = name
        self.upstream = parse_address(upstream)
        self.host = host
        self._requested_port = port
        self.port = 0

    @property
    def address(self) -> str:
        """host:port to give a client instead of the upstream's (PUBSUB_EMULATOR_HOST)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """http://host:port to give an HTTP client instead of the upstream's (STORAGE_EMULATOR_HOST)."""
        return f"http://{self.address}"


class FaultProxy(ProxyEndpoint):
    """A TCP proxy to one upstream whose faults are set at runtime; see the module docstring."""

    def __init__(self, upstream: str | tuple[str, int], **where) -> None:
        super().__init__(upstream, **where)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._listening = False
        self._faults = FaultState()
        self._counters = RelayCounters()
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._holding: dict[ProxyFault, _Holding] = {}
        self._tallies = {kind: [0, 0.0] for kind in ProxyFault}
        self._accepted = 0
        self._reset = 0
        self._closed_by_refuse = 0
        self._upstream_failures = 0

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Bind the listening socket and start relaying on the proxy's own thread."""
        if self._thread is not None:
            raise RuntimeError(f"proxy {self.name} already started")
        # Resolved once: asyncio would otherwise resolve a name on every connection, in a thread.
        host, port = self.upstream
        *_, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self._upstream_sockaddr = sockaddr[:2]
        self._listener = _bind_listener(self.host, self._requested_port)
        self.port = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        self._call(self._listen)
        log.info("proxy %s: %s -> %s:%d", self.name, self.address, *self.upstream)
        return self

    def stop(self) -> None:
        """Close every socket, stop the loop and join its thread; safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shut_down)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_CALL_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"proxy {self.name}: loop thread did not stop")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------
    def refuse(self, duration: float | None = None) -> None:
        """Refuse new connections and close open ones, for duration seconds or until cleared."""
        self._call(self._apply, ProxyFault.REFUSE, duration)

    def blackhole(self, duration: float | None = None) -> None:
        """Relay nothing either way (connections are still accepted), for duration or until cleared."""
        self._call(self._apply, ProxyFault.BLACKHOLE, duration)

    def delay(
        self, to_upstream: float, to_client: float | None = None, *, duration: float | None = None
    ) -> None:
        """Add latency in seconds towards the upstream and back (default: the same both ways)."""
        to_client = to_upstream if to_client is None else to_client
        if to_upstream < 0 or to_client < 0:
            raise ValueError("a delay cannot be negative")
        self._call(self._apply, ProxyFault.DELAY, duration, (to_upstream, to_client))

    def reset(self) -> int:
        """Reset every open connection (RST both ways); return how many were reset."""
        return self._call(self._apply, ProxyFault.RESET, None)

    def clear(self, kind: ProxyFault | str | None = None) -> None:
        """End one kind of fault, or all of them; traffic then passes as before."""
        kinds = list(ProxyFault) if kind is None else [ProxyFault(kind)]
        self._call(self._clear, kinds)

    def active_faults(self) -> set[ProxyFault]:
        """The kinds of fault in effect now."""
        return self._call(lambda: set(self._holding))

    def stats(self) -> ProxyStats:
        """Connections, bytes and faults so far (faults still holding count up to now)."""
        return self._call(self._snapshot)

    # --- on the loop thread ----------------------------------------------------------------
    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Let aborted transports run their connection_lost (which closes the sockets).
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.close()

    def _call(self, fn, *args):
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            raise RuntimeError(f"proxy {self.name} is not running")
        if threading.current_thread() is thread:
            return fn(*args)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=_CALL_TIMEOUT)

    def _listen(self) -> None:
        if self._listening:
            return
        self._listener.listen(_BACKLOG)
        self._loop.add_reader(self._listener.fileno(), self._accept)
        self._listening = True

    def _unlisten(self) -> None:
        """Stop listening but keep the port: connects now get ECONNREFUSED."""
        if not self._listening:
            return
        self._loop.remove_reader(self._listener.fileno())
        # On Linux, shutdown() of a listening socket leaves LISTEN (resetting connections in
        # its backlog) while the explicitly bound port stays ours for listen() to resume.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RD)
        self._listening = False

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("proxy %s: accept failed: %s", self.name, exc)
                return
            sock.setblocking(False)
            connection = Connection(self._loop, self._faults, self._counters, self._forget)
            self._connections.add(connection)
            self._accepted += 1
            task = self._loop.create_task(connection.open(sock, self._upstream_sockaddr))
            self._tasks.add(task)
            task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is None and task.result() is False:
            self._upstream_failures += 1

    def _forget(self, connection: Connection) -> None:
        self._connections.discard(connection)

    def _apply(self, kind: ProxyFault, duration: float | None, params=None) -> int:
        if duration is not None and duration < 0:
            raise ValueError("a duration cannot be negative")
        now = time.monotonic()
        self._tallies[kind][0] += 1
        if kind is ProxyFault.RESET:
            return self._reset_connections()
        previous = self._holding.pop(kind, None)
        if previous is not None:  # applied again: the old hold ends here, the new one starts
            self._close_hold(kind, previous, now)
        timer = None if duration is None else self._loop.call_later(duration, self._end, kind)
        self._holding[kind] = _Holding(started=now, timer=timer)
        if kind is ProxyFault.REFUSE:
            self._unlisten()
            for connection in list(self._connections):
                connection.abort(reset=False)
                self._closed_by_refuse += 1
        elif kind is ProxyFault.BLACKHOLE:
            self._faults.blackholed = True
            for connection in list(self._connections):
                connection.blackhole()
        elif kind is ProxyFault.DELAY:
            self._faults.delay_to_upstream, self._faults.delay_to_client = params
        log.info("proxy %s: %s for %s s", self.name, kind, duration)
        return 0

    def _reset_connections(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            connection.abort(reset=True)
        self._reset += len(connections)
        log.info("proxy %s: reset %d connections", self.name, len(connections))
        return len(connections)

    def _end(self, kind: ProxyFault) -> None:
        holding = self._holding.pop(kind, None)
        if holding is None:
            return
        self._close_hold(kind, holding, time.monotonic())
        if kind is ProxyFault.REFUSE:
            self._listen()
        elif kind is ProxyFault.BLACKHOLE:
            self._faults.blackholed = False
            for connection in list(self._connections):
                connection.unblackhole()
        elif kind is ProxyFault.DELAY:
            self._faults.delay_to_upstream = self._faults.delay_to_client = 0.0
        log.info("proxy %s: %s ended", self.name, kind)

    def _close_hold(self, kind: ProxyFault, holding: _Holding, now: float) -> None:
        if holding.timer is not None:
            holding.timer.cancel()
        self._tallies[kind][1] += now - holding.started

    def _clear(self, kinds: list[ProxyFault]) -> None:
        for kind in kinds:
            self._end(kind)

    def _snapshot(self) -> ProxyStats:
        now = time.monotonic()
        faults = {}
        for kind, (applied, seconds) in self._tallies.items():
            holding = self._holding.get(kind)
            running = now - holding.started if holding else 0.0
            faults[kind] = FaultTally(applied=applied, seconds=seconds + running)
        return ProxyStats(
            connections_accepted=self._accepted,
            connections_open=len(self._connections),
            connections_reset=self._reset,
            connections_closed_by_refuse=self._closed_by_refuse,
            upstream_connect_failures=self._upstream_failures,
            bytes_to_upstream=self._counters.bytes_to_upstream,
            bytes_to_client=self._counters.bytes_to_client,
            held_to_upstream=self._counters.held_to_upstream,
            held_to_client=self._counters.held_to_client,
            faults=faults,
        )

    def _shut_down(self) -> None:
        now = time.monotonic()
        for kind, holding in self._holding.items():
            self._close_hold(kind, holding, now)
        self._holding.clear()
        if self._listening:
            self._loop.remove_reader(self._listener.fileno())
            self._listening = False
        self._listener.close()
        for connection in list(self._connections):
            connection.abort(reset=False)
