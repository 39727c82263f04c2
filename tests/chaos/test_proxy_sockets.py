"""FaultProxy on plain sockets: byte integrity, HTTP/1.1 keep-alive, life cycle, threads."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from chaos.proxy import FaultProxy, ProxyFault
from chaos.proxy_process import ProxyProcess
from tests.chaos.waiting import wait_until


class _Echo:
    """A TCP server that sends back whatever it reads, a thread per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := _recv(conn):
                conn.sendall(data)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self._thread.join(timeout=5)


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def echo():
    server = _Echo()
    yield server
    server.close()


@pytest.fixture
def echo_proxy(echo):
    with FaultProxy(echo.address, name="echo") as proxy:
        yield proxy


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one send; two would meet Nagle and delayed ACK (40 ms each).
    wbufsize = 64 * 1024

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def keep_alive_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def test_http11_keep_alive_requests_share_one_connection_and_refuse_closes_it(
    keep_alive_server,
):
    with FaultProxy(keep_alive_server.server_address, name="http") as proxy:
        session = requests.Session()
        answers = [session.get(f"{proxy.url}/item/{i}", timeout=5).text for i in range(50)]
        assert answers == [f"/item/{i}" for i in range(50)]
        assert proxy.stats().connections_accepted == 1

        proxy.refuse()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(f"{proxy.url}/during", timeout=5)
        assert proxy.stats().connections_closed_by_refuse == 1

        proxy.clear()
        assert session.get(f"{proxy.url}/after", timeout=5).text == "/after"
        assert proxy.stats().connections_accepted == 2
        session.close()


def test_bytes_arrive_intact_and_in_order_while_delay_and_blackhole_change(echo_proxy):
    chunk, chunks, chunks_per_change = 16 * 1024, 256, 4
    payload = random.Random(1).randbytes(chunk * chunks)
    received = bytearray()
    changes = threading.Semaphore(0)
    client = connect(echo_proxy, timeout=20)

    def send() -> None:
        # Paced by the fault changes, so the stream is in flight through all of them.
        for i in range(chunks):
            if i % chunks_per_change == 0:
                changes.acquire(timeout=20)
            client.sendall(payload[i * chunk : (i + 1) * chunk])

    def receive() -> None:
        while len(received) < len(payload):
            data = client.recv(1 << 20)
            if not data:
                return
            received.extend(data)

    threads = [threading.Thread(target=send), threading.Thread(target=receive)]
    for thread in threads:
        thread.start()
    faults = random.Random(2)
    for _ in range(chunks // chunks_per_change):
        # A shrinking delay would reorder chunks if each left at its own arrival + delay.
        echo_proxy.delay(faults.uniform(0, 0.03), faults.uniform(0, 0.03))
        if faults.random() < 0.3:
            echo_proxy.blackhole(duration=faults.uniform(0, 0.03))
        changes.release()
        time.sleep(0.005)
    echo_proxy.clear()
    for thread in threads:
        thread.join(timeout=30)
    client.close()

    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert echo_proxy.stats().faults[ProxyFault.DELAY].applied == chunks // chunks_per_change


def test_a_client_whose_upstream_is_down_is_reset_and_counted():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()  # bound, never listening: connects are refused
        with FaultProxy(nobody, name="down") as proxy:
            # The reset may come before connect() returns (it then reports it) or after.
            with pytest.raises(ConnectionResetError), connect(proxy) as client:
                client.sendall(b"hello")
                client.recv(10)
            wait_until(lambda: proxy.stats().upstream_connect_failures == 1, "the failure count")
            assert proxy.stats().connections_open == 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stop_closes_every_socket_and_joins_its_thread(echo):
    fds_before = open_fds()
    proxy = FaultProxy(echo.address, name="echo").start()
    clients = [connect(proxy) for _ in range(3)]
    for client in clients:
        client.sendall(b"ping")
        assert client.recv(10) == b"ping"
    proxy.blackhole()  # even held connections must go

    proxy.stop()

    for client in clients:
        assert _recv(client) == b""
        client.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy, timeout=1)
    assert not proxy._thread.is_alive()
    # Its listener, both ends of every connection, its event loop's epoll and wake-up pipe.
    wait_until(lambda: open_fds() <= fds_before, "every descriptor the proxy opened closed")
    with pytest.raises(RuntimeError, match="not running"):
        proxy.refuse()
    proxy.stop()  # a second stop is harmless


def test_faults_from_many_threads_at_once_leave_a_consistent_proxy(echo_proxy):
    client = connect(echo_proxy)
    rounds = 100

    def toggle(kind: str) -> None:
        for _ in range(rounds):
            if kind == "delay":
                echo_proxy.delay(0.001)
            elif kind == "blackhole":
                echo_proxy.blackhole()
            elif kind == "refuse":
                echo_proxy.refuse(duration=0.001)
            echo_proxy.stats()
            echo_proxy.clear(kind)

    threads = [threading.Thread(target=toggle, args=(k,)) for k in ("delay", "blackhole", "refuse")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    stats = echo_proxy.stats()
    assert echo_proxy.active_faults() == set()
    assert [stats.faults[k].applied for k in ("delay", "blackhole", "refuse")] == [rounds] * 3
    client.close()  # closed by a refuse meanwhile
    fresh = connect(echo_proxy)
    fresh.sendall(b"still relaying")
    assert fresh.recv(100) == b"still relaying"
    fresh.close()


def test_a_timed_fault_ends_by_itself_and_is_tallied_by_the_time_it_held(echo_proxy):
    echo_proxy.delay(0.01, duration=0.3)
    assert echo_proxy.active_faults() == {ProxyFault.DELAY}
    wait_until(lambda: not echo_proxy.active_faults(), "the delay to end")

    echo_proxy.delay(0.01, duration=10)
    echo_proxy.delay(0.02, duration=0.2)  # applied again: counted again, the timer restarts
    wait_until(lambda: not echo_proxy.active_faults(), "the second delay to end")

    tally = echo_proxy.stats().faults[ProxyFault.DELAY]
    assert tally.applied == 3
    assert 0.5 <= tally.seconds < 1.0


def test_a_proxy_in_a_process_of_its_own_relays_and_injects_faults(echo):
    with ProxyProcess(echo.address, name="echo") as proxy:
        with connect(proxy) as client:
            client.sendall(b"ping")
            assert client.recv(10) == b"ping"
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            connect(proxy, timeout=1)
        proxy.clear()
        proxy.delay(0.2, duration=5)
        with connect(proxy) as client:
            started = time.monotonic()
            client.sendall(b"pong")
            assert client.recv(10) == b"pong"
            assert time.monotonic() - started >= 0.4
        assert proxy.active_faults() == {ProxyFault.DELAY}
        with pytest.raises(ValueError):  # errors cross the process boundary
            proxy.delay(-1)
        stats = proxy.stats()
        child = proxy.pid

    assert stats.faults[ProxyFault.REFUSE].applied == 1 and stats.connections_accepted == 2
    assert not Path(f"/proc/{child}").exists()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy, timeout=1)


ABANDONING_CALLER = """
import os, sys
from chaos.proxy_process import ProxyProcess
proxy = ProxyProcess(("127.0.0.1", int(sys.argv[1]))).start()
print(proxy.pid, flush=True)
os._exit(0)  # no clean-up at all: the proxy's process must notice and go
"""


def test_a_proxy_process_goes_when_its_caller_dies(echo):
    caller = subprocess.run(
        [sys.executable, "-c", ABANDONING_CALLER, str(echo.address[1])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    child = int(caller.stdout.split()[0])

    wait_until(lambda: not Path(f"/proc/{child}").exists(), "the proxy process to exit")
