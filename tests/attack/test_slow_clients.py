"""Slow clients against the real server (gunicorn): they must not hold the request threads.

The attack: keyed connections that send their headers and then a body a byte now and then
(or headers a byte at a time), one per request thread of the server. Stock gthread gives
each a thread that waits on it, so the next client waits for ever. Now requests are read
in the event loop: a normal request is answered at once, and the slow ones get a 408 and
are closed once REQUEST_READ_TIMEOUT_SECONDS have passed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.api_process import running_api

pytestmark = pytest.mark.integration

KEY = "slow-client-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
READ_TIMEOUT = 2.0
WORKERS, THREADS = 1, 2
# The event loop looks at deadlines about once a second.
CUT_OFF_SLACK = 1.5


@pytest.fixture
def api(pipeline, artifacts_dir):
    """The API under gunicorn with few request threads and a short read deadline."""
    settings = pipeline.replace(
        api_keys=KEY,
        api_workers=WORKERS,
        api_threads=THREADS,
        request_read_timeout_seconds=READ_TIMEOUT,
    )
    with running_api(settings, artifacts_dir) as server:
        yield server


class SlowClient:
    """A raw connection that sends `head` at once, then one byte of `rest` every `pace` s."""

    def __init__(self, url: str, head: bytes, rest: bytes, pace: float = 0.2) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.sock.sendall(head)
        self.rest, self.pace = rest, pace
        self.stop = threading.Event()
        self.cut_off_at: float | None = None
        self.answer = b""
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self) -> None:
        for byte in self.rest:
            if self.stop.wait(self.pace):
                return
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                return  # the server closed the connection

    def read_answer(self, timeout: float) -> bytes:
        """Everything the server sends until it closes the connection (or timeout)."""
        self.sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(4096):
                self.answer += chunk
        self.cut_off_at = time.monotonic()
        return self.answer

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def slow_clients(url: str, count: int, head: bytes, rest: bytes) -> Iterator[list[SlowClient]]:
    clients = [SlowClient(url, head, rest) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def slow_body(length: int = 400) -> tuple[bytes, bytes]:
    body = json.dumps({"task_type": "data_transformation", "dataset_size": 5}).ljust(length)
    head = (
        "POST /submit-task HTTP/1.1\r\nHost: api\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body[:1].encode()
    return head, body[1:].encode()


def test_slow_bodies_on_every_thread_leave_a_normal_request_answered_at_once(api):
    head, rest = slow_body()
    with slow_clients(api.url, WORKERS * THREADS * 2, head, rest) as clients:
        time.sleep(0.5)  # the slow bodies are all being dribbled now
        started = time.monotonic()
        # A normal request, and a large one (~130 KB, many reads) to show buffering keeps
        # bodies whole.
        records = [{"value": i, "name": "x" * 40} for i in range(2000)]
        normal = requests.post(
            f"{api.url}/submit-task",
            json={"task_type": "data_transformation", "records": records},
            headers=AUTH,
            timeout=READ_TIMEOUT,
        )
        answered_in = time.monotonic() - started
        answers = [client.read_answer(READ_TIMEOUT + CUT_OFF_SLACK + 2) for client in clients]
        cut_off_after = [client.cut_off_at - started for client in clients]

    assert normal.status_code == 202, normal.text
    assert answered_in < 1.0, f"a normal request waited {answered_in:.2f}s behind slow bodies"
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"code": "request_timeout"' in answer
        assert b"Connection: close" in answer
        assert b"X-Content-Type-Options: nosniff" in answer
    assert max(cut_off_after) < READ_TIMEOUT + CUT_OFF_SLACK, cut_off_after


def test_slow_headers_are_cut_off_too_without_holding_a_thread(api):
    request = f"GET /tasks/t1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    with slow_clients(api.url, WORKERS * THREADS * 2, request[:3].encode(), b"x" * 200) as clients:
        time.sleep(0.5)
        started = time.monotonic()
        health = requests.get(f"{api.url}/health", timeout=READ_TIMEOUT)
        answered_in = time.monotonic() - started
        answers = [client.read_answer(READ_TIMEOUT + CUT_OFF_SLACK + 2) for client in clients]

    assert health.status_code == 200 and answered_in < 1.0, answered_in
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers


def test_a_silent_connection_is_closed_without_an_answer(api):
    parts = urlsplit(api.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as silent:
        silent.settimeout(READ_TIMEOUT + CUT_OFF_SLACK + 2)
        started = time.monotonic()
        assert silent.recv(100) == b""  # closed, nothing said: it asked nothing
        assert time.monotonic() - started < READ_TIMEOUT + CUT_OFF_SLACK


def test_clients_that_never_close_do_not_stall_the_event_loop(api):
    # gunicorn's graceful close waits up to 2 s for the client to close its side. In the
    # event loop, each such client would stop every other connection for that long.
    parts = urlsplit(api.url)
    request = b"GET /health HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
    lingering = []
    try:
        for _ in range(10):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            sock.sendall(request)
            lingering.append(sock)  # read nothing, close nothing
        time.sleep(0.3)
        started = time.monotonic()
        health = requests.get(f"{api.url}/health", timeout=10)
        answered_in = time.monotonic() - started
    finally:
        for sock in lingering:
            sock.close()

    assert health.status_code == 200
    assert answered_in < 1.0, f"the event loop was held {answered_in:.2f}s by idle closers"
