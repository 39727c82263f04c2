"""Recording proxies in front of the emulators: every RPC and Cloud Storage request, by caller.

A process pointed at a recorder (PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST) reaches the
real emulator through it, and the recorder notes what it asked for: the gRPC method and the
topic or subscription it names, or the Cloud Storage JSON API method and bucket. One pair of
recorders per identity (the API, the worker) attributes the traffic to the service account
that would make it in production. A third, in front of the local Cloud Run Jobs stand-in,
records the dispatcher's Cloud Run Admin API calls the same way (any gRPC service forwards).
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from iam_contract import gcs_method, grpc_call

# Hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1), and those it recomputes.
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
}
_GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@dataclass(frozen=True)
class Request:
    """One recorded request: the API method and the resource it names ("?" if unknown)."""

    method: str
    resource: str


@dataclass
class Recording:
    """Requests seen so far, safe to append to from the proxies' threads."""

    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, resource: str) -> None:
        with self.lock:
            self.requests.append(Request(method, resource))

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)


class _Forward(grpc.GenericRpcHandler):
    """Forwards every unary-unary call, as raw bytes, to the upstream channel."""

    def __init__(self, upstream: grpc.Channel, recording: Recording) -> None:
        self.upstream = upstream
        self.recording = recording

    def service(self, handler_call_details):
        method = handler_call_details.method.lstrip("/")

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.recording.add(*grpc_call(method, request))
            if method.endswith("/StreamingPull"):
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "the recorder forwards no streams")
            remaining = context.time_remaining()
            call = self.upstream.unary_unary(f"/{method}")
            try:
                return call(request, timeout=remaining if remaining and remaining < 3600 else None)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")

        return grpc.unary_unary_rpc_method_handler(forward)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            chunk = handler.rfile.read(size)
            handler.rfile.readline()
            if not size:
                return b"".join(chunks)
            chunks.append(chunk)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _gcs_handler(upstream: str, recording: Recording, own_base: list[str]):
    target = urllib.parse.urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            body = _read_body(self)
            path, _, query = self.path.partition("?")
            method, bucket = gcs_method(self.command, path, query)
            recording.add(method, bucket or "?")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                data = response.read()
                response_headers = response.getheaders()
            finally:
                connection.close()
            # Links the emulator hands out (resumable upload sessions, media links) must come
            # back through the recorder, or the client would go around it.
            base = target.geturl().rstrip("/")
            if "json" in (response.getheader("Content-Type") or ""):
                data = data.replace(base.encode(), own_base[0].encode())
            self.send_response(response.status, response.reason)
            for name, value in response_headers:
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value.replace(base, own_base[0]))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

        def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's name
            pass

    return Handler


@dataclass
class Recorders:
    """The recorders, and the hosts that reach the emulators (and stand-ins) through them."""

    pubsub_host: str
    storage_url: str
    recording: Recording
    # host:port in front of the Cloud Run Jobs stand-in, when one was given.
    jobs_host: str | None = None


@contextmanager
def grpc_serving(handler: grpc.GenericRpcHandler) -> Iterator[str]:
    """A gRPC server on a free local port answering with handler; its host:port, until exit."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=_GRPC_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(10)


@contextmanager
def grpc_recorder(upstream: str, recording: Recording) -> Iterator[str]:
    """A recorder forwarding every unary gRPC call to upstream; its host:port, until exit."""
    channel = grpc.insecure_channel(upstream, options=_GRPC_OPTIONS)
    try:
        with grpc_serving(_Forward(channel, recording)) as host:
            yield host
    finally:
        channel.close()


@contextmanager
def recording_proxies(
    pubsub_upstream: str, storage_upstream: str, jobs_upstream: str | None = None
) -> Iterator[Recorders]:
    """Start the recorders in front of the emulators; always stopped on exit."""
    recording = Recording()
    with ExitStack() as stack:
        pubsub_host = stack.enter_context(grpc_recorder(pubsub_upstream, recording))
        jobs_host = (
            stack.enter_context(grpc_recorder(jobs_upstream, recording)) if jobs_upstream else None
        )
        storage_url = stack.enter_context(_storage_recorder(storage_upstream, recording))
        yield Recorders(pubsub_host, storage_url, recording, jobs_host)


@contextmanager
def _storage_recorder(storage_upstream: str, recording: Recording) -> Iterator[str]:
    own_base: list[str] = []
    http_server = ThreadingHTTPServer(
        ("127.0.0.1", 0), _gcs_handler(storage_upstream, recording, own_base)
    )
    http_server.daemon_threads = True
    own_base.append(f"http://127.0.0.1:{http_server.server_address[1]}")
    http_thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    http_thread.start()
    try:
        yield own_base[0]
    finally:
        http_server.shutdown()
        http_server.server_close()
