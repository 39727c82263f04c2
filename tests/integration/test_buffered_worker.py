"""The buffering gthread worker speaks HTTP/1.1 as gunicorn does: keep-alive, pipelining,
100-continue and oversize bodies, on the real server."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.integration.api_process import running_api

pytestmark = pytest.mark.integration

BODY = json.dumps({"task_type": "data_transformation", "dataset_size": 3}).encode()


@pytest.fixture
def api(pipeline, artifacts_dir):
    settings = pipeline.replace(api_workers=1, api_threads=2, max_request_bytes=4096)
    with running_api(settings, artifacts_dir) as server:
        yield server


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def read_responses(sock: socket.socket, count: int) -> list[int]:
    """The status codes of `count` responses (bodies are small and sized)."""
    data, statuses = b"", []
    while len(statuses) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    (
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    b"0",
                )
            )
            if len(rest) < length:
                break
            statuses.append(int(head.split(b" ")[1]))
            data = rest[length:]
    return statuses


def submit(extra: bytes = b"", body: bytes = BODY) -> bytes:
    return (
        b"POST /submit-task HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_pipelined_requests_on_one_connection_are_all_answered_in_order(api):
    with connect(api.url) as sock:
        sock.sendall(submit() + b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n" + submit())
        statuses = read_responses(sock, 3)

    assert statuses == [202, 200, 202]


def test_a_client_that_waits_for_100_continue_is_told_to_send(api):
    with connect(api.url) as sock:
        sock.sendall(submit(b"Expect: 100-continue\r\n", b"")[: -len(b"Content-Length: 0\r\n\r\n")])
        sock.sendall(f"Content-Length: {len(BODY)}\r\n\r\n".encode())
        interim = sock.recv(100)
        sock.sendall(BODY)
        statuses = read_responses(sock, 1)

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert statuses == [202]


def test_a_body_over_every_limit_is_refused_by_its_route_without_being_read(api):
    with connect(api.url) as sock:
        sock.sendall(submit(body=b"")[: -len(b"Content-Length: 0\r\n\r\n")])
        sock.sendall(b"Content-Length: 100000000\r\n\r\n" + b"x" * 1000)
        answer = sock.recv(65536)

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer
