"""gunicorn's gthread worker, except that a request reaches a thread only once it is all here.

Stock gthread hands a connection to a request thread as soon as its first byte arrives;
the thread then blocks reading headers and body for as long as the client takes. A handful
of clients sending a byte now and then holds every thread, and the API stops answering.
Here the worker's event loop reads each request (headers and body, up to the largest body
any route accepts) without blocking, alongside every other connection, and submits it to
the thread pool only when it is complete. A request not complete within
REQUEST_READ_TIMEOUT_SECONDS of its connection (or, kept alive, of its first byte) is
answered 408 and closed, still without a thread. A body over that limit is handed over
once the limit is passed: the route refuses it (413) without needing the rest. Threads
only ever read requests that are already in memory.

Closing a connection never blocks the event loop either. gunicorn's graceful close waits
in the event loop, up to 2 s, for the client to close its side: each client that never does
stalls every other connection of the worker that long. Here the wait is one more socket in
the poller.

Plain HTTP/1.x only, which is what Cloud Run speaks to a container unless end-to-end HTTP/2
is turned on; gunicorn_options() configures neither TLS nor HTTP/2.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import time
from dataclasses import dataclass
from functools import partial

from gunicorn.http.unreader import Unreader
from gunicorn.workers.gthread import ThreadWorker

from task_api.request_framing import INCOMPLETE, TOO_LARGE, RequestFrame

RECV_BYTES = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Every header section gunicorn accepts fits: longer ones are refused as soon as it parses.
_HEADER_SLACK = 4 * 1024
# After a refusal, how long the client may go on sending (discarded) before the close: a
# close with its bytes unread would reset the connection and could lose the answer.
LINGER_SECONDS = 2.0


class HeldRequest(Unreader):
    """What gunicorn's parser reads in a request thread: the buffered bytes, then nothing.

    Never the socket: should gunicorn frame a request longer than RequestFrame did (a
    malformed one), it meets the end of the data and refuses it, instead of a thread
    waiting on the client.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.buf.write(data)

    def chunk(self, size_hint=None) -> bytes:
        return b""


@dataclass
class _Reading:
    """A connection whose request is still arriving, and when it must have arrived by."""

    frame: RequestFrame
    deadline: float
    sent_continue: bool = False


def error_answer(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response in the API's JSON shape, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "X-Content-Type-Options: nosniff\r\n\r\n"
    )
    return head.encode("ascii") + body


class BufferingThreadWorker(ThreadWorker):
    """A gthread worker whose threads never wait for a client. See the module docstring.

    `read_timeout` and `max_body_bytes` are set on the subclass gunicorn_options() makes.
    """

    read_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024

    def init_process(self) -> None:
        self._reading: dict[object, _Reading] = {}
        self._lingering: dict[object, float] = {}
        cfg = self.cfg
        self._max_header_bytes = (
            cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size + 2)
            if cfg.limit_request_line and cfg.limit_request_fields and cfg.limit_request_field_size
            else 1024 * 1024
        ) + _HEADER_SLACK
        super().init_process()

    # --- every way a connection reaches the thread pool comes through here -------------------

    def enqueue_req(self, conn) -> None:
        """Start reading the connection's next request in the event loop (not in a thread)."""
        reading = _Reading(
            RequestFrame(self._max_header_bytes, self.max_body_bytes),
            deadline=time.monotonic() + self.read_timeout,
        )
        self._reading[conn] = reading
        self._close_without_blocking(conn)
        # A kept-alive connection may hold bytes of its next request already read.
        if conn.parser is not None and self._feed(conn, conn.parser.unreader.take_buffered()):
            return
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        self._on_readable(conn)

    def handle(self, conn):
        """In a request thread: hand the buffered request to gunicorn's parser, then serve it."""
        data = conn.__dict__.pop("prebuffered", None)
        if data is not None:
            conn.data_ready = True  # no waiting for a first byte: the request is here
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader = HeldRequest(data)
        return super().handle(conn)

    def handle_request(self, req, conn):
        # The body is here already: asking for it (100 Continue) would only confuse.
        req._expected_100_continue = False
        if getattr(conn, "cut_short", False):
            req.must_close = True  # the body's rest is still on its way: not a next request
        return super().handle_request(req, conn)

    # --- reading in the event loop -----------------------------------------------------------

    def _on_readable(self, conn, _fileobj=None) -> None:
        reading = self._reading.get(conn)
        if reading is None:
            return
        while True:
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn)
                return
            if not data:  # the client went away before its request was complete
                self._close(conn)
                return
            if self._feed(conn, data):
                return
        if reading.frame.expects_continue and not reading.sent_continue:
            reading.sent_continue = True
            self._send(conn, CONTINUE)

    def _feed(self, conn, data: bytes) -> bool:
        """Add data to the connection's request; True once it left the reading state."""
        if not data:
            return False
        reading = self._reading[conn]
        outcome = reading.frame.feed(data)
        if outcome == INCOMPLETE:
            return False
        # COMPLETE, or TOO_LARGE: what arrived already passes the route's limit, and the
        # route refuses it (413) from that; the rest is never read, so the connection closes.
        self._stop_reading(conn)
        conn.cut_short = outcome == TOO_LARGE
        conn.prebuffered = reading.frame.take()
        super().enqueue_req(conn)
        return True

    def murder_pending(self) -> None:
        """Also, once a second: answer 408 to requests past their deadline and close them."""
        super().murder_pending()
        now = time.monotonic()
        for conn, until in list(self._lingering.items()):
            if until <= now or not self.alive:
                self._end_linger(conn)
        for conn, reading in list(self._reading.items()):
            idle_at_stop = not self.alive and not reading.frame.received
            if reading.deadline <= now or idle_at_stop:
                self._stop_reading(conn)
                if not reading.frame.received:
                    self._close(conn)  # it never said anything: nothing to answer
                    continue
                self.log.info(
                    "request from %s not received within %.0f s: 408",
                    _peer(conn),
                    self.read_timeout,
                )
                self._refuse(
                    conn,
                    error_answer(
                        408,
                        "Request Timeout",
                        "request_timeout",
                        f"the request did not arrive in full within {self.read_timeout:g} s "
                        "(REQUEST_READ_TIMEOUT_SECONDS)",
                    ),
                )

    # --- connection bookkeeping --------------------------------------------------------------

    def _stop_reading(self, conn) -> None:
        self._reading.pop(conn, None)
        self._lingering.pop(conn, None)
        # Not registered when the bytes already held were enough, or the socket is closed.
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _send(self, conn, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                self.log.debug("could not write to %s: %s", _peer(conn), exc)

    def _refuse(self, conn, answer: bytes) -> None:
        # A short answer fits the socket's send buffer.
        self._send(conn, answer)
        self.nr_conns -= 1
        self._linger(conn)

    def _close_without_blocking(self, conn) -> None:
        """Make gunicorn's graceful close of this connection linger in the event loop."""
        if "close" in conn.__dict__:
            return
        close_now = conn.close

        def close(graceful: bool = False) -> None:
            if graceful:
                self._linger(conn)  # gunicorn counted the connection out already
            else:
                close_now()

        conn.close = close

    def _linger(self, conn) -> None:
        """No more writes; read and drop what the client still sends, then close.

        Closing with the client's bytes unread would reset the connection and could lose
        the last answer; the client gets LINGER_SECONDS to close its side.
        """
        self._stop_reading(conn)
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._discard, conn))
        except (OSError, ValueError):
            self._end_linger(conn)
            return
        self._lingering[conn] = time.monotonic() + LINGER_SECONDS

    def _discard(self, conn, _fileobj=None) -> None:
        while True:
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._end_linger(conn)
                return

    def _end_linger(self, conn) -> None:
        self._stop_reading(conn)
        type(conn).close(conn)

    def _close(self, conn) -> None:
        self._stop_reading(conn)
        self.nr_conns -= 1
        type(conn).close(conn)


def _peer(conn) -> str:
    client = conn.client
    return client[0] if isinstance(client, tuple) else str(client)


def worker_class(read_timeout: float, max_body_bytes: int) -> type[BufferingThreadWorker]:
    """The worker class gunicorn runs, with this API's read deadline and body limit."""
    return type(
        "ApiThreadWorker",
        (BufferingThreadWorker,),
        {"read_timeout": read_timeout, "max_body_bytes": max_body_bytes, "__module__": __name__},
    )
