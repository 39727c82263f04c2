"""One relayed TCP connection: two sockets and the two ordered byte streams between them.

Everything here runs on the proxy's event-loop thread and is driven by `FaultProxy`
(chaos.proxy), which owns the fault state this module only reads through `FaultState`.

Each direction is a `_Stream`. Bytes normally go straight from one socket to the other
(the fast path: no copy, no timer). Under a delay or a blackhole they wait in the stream's
queue, in arrival order, each with the moment it may leave: a later chunk never leaves
before an earlier one even when the delay shrinks, so the byte stream stays intact. End of
stream (EOF) and close travel through the same queue, so a FIN does not overtake the data
in front of it, and a blackhole holds it back like a real partition would.

Reading stops (the kernel's buffers then fill and the sender stalls, as TCP would) while
the connection is blackholed, while the other side's send buffer is full, and while a
stream holds more than `MAX_QUEUED_BYTES`.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
from collections import deque
from dataclasses import dataclass

# Bytes a stream may hold back (delay, blackhole) before it stops reading its source.
MAX_QUEUED_BYTES = 4 * 1024 * 1024
# SO_LINGER on, timeout 0: close() sends RST instead of FIN and drops unsent data.
_LINGER_RESET = struct.pack("ii", 1, 0)


class Direction(enum.StrEnum):
    """Which way bytes flow through the proxy."""

    TO_UPSTREAM = "to_upstream"
    TO_CLIENT = "to_client"


@dataclass
class FaultState:
    """What every connection consults on each chunk; mutated only on the loop thread."""

    blackholed: bool = False
    delay_to_upstream: float = 0.0
    delay_to_client: float = 0.0

    def delay(self, direction: Direction) -> float:
        return (
            self.delay_to_upstream if direction is Direction.TO_UPSTREAM else self.delay_to_client
        )


@dataclass
class RelayCounters:
    """Running totals the proxy reports; updated on the loop thread only."""

    bytes_to_upstream: int = 0
    bytes_to_client: int = 0
    # Waiting in the proxy now (delay, blackhole, the upstream still connecting), by direction.
    held_to_upstream: int = 0
    held_to_client: int = 0

    def hold(self, direction: Direction, size: int) -> None:
        if direction is Direction.TO_UPSTREAM:
            self.held_to_upstream += size
        else:
            self.held_to_client += size


class _Marker(enum.Enum):
    EOF = "eof"
    CLOSE = "close"


class _Side(asyncio.Protocol):
    """One socket of the connection: the client's accepted socket or the upstream socket."""

    def __init__(self, connection: Connection, name: str) -> None:
        self.connection = connection
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._pause_reasons: set[str] = set()
        # Wired by Connection: the stream this side feeds and the one that feeds it.
        self.outgoing: _Stream
        self.incoming: _Stream

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self._pause_reasons:
            transport.pause_reading()
        self.incoming.flush()

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push(_Marker.EOF)
        return True  # keep the socket open for the other direction (half-close)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.incoming.drop()
        self.outgoing.push(_Marker.CLOSE)
        self.connection.side_closed()

    def pause_writing(self) -> None:
        self.incoming.source.pause("sink_full")

    def resume_writing(self) -> None:
        self.incoming.source.resume("sink_full")

    # --- reading control -----------------------------------------------------------------
    def pause(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # --- ending ----------------------------------------------------------------------------
    def abort(self, *, reset: bool) -> None:
        """Close at once, dropping unsent bytes; with reset, the peer gets RST (SO_LINGER 0)."""
        if self.transport is None or self.closed:
            return
        if reset:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.abort()


class _Stream:
    """Bytes flowing one way, in order, with the current delay and blackhole applied."""

    def __init__(
        self,
        connection: Connection,
        direction: Direction,
        source: _Side,
        sink: _Side,
    ) -> None:
        self.connection = connection
        self.direction = direction
        self.source = source
        self.sink = sink
        self._queue: deque[tuple[float, bytes | _Marker]] = deque()
        self._queued_bytes = 0
        self._last_due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.ended = False  # the source's EOF was passed on

    def push(self, item: bytes | _Marker) -> None:
        """Take what the source sent: pass it on now, or queue it until it may leave."""
        faults = self.connection.faults
        delay = faults.delay(self.direction)
        if not self._queue and not faults.blackholed and delay <= 0 and self._sink_ready():
            self._deliver(item)
            return
        loop = self.connection.loop
        self._last_due = max(loop.time() + delay, self._last_due)
        self._queue.append((self._last_due, item))
        if isinstance(item, bytes):
            self._queued_bytes += len(item)
            self.connection.counters.hold(self.direction, len(item))
            if self._queued_bytes > MAX_QUEUED_BYTES:
                self.source.pause("queue_full")
        self.flush()

    def flush(self) -> None:
        """Deliver every queued item that is due; arm a timer for the next one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.connection.faults.blackholed or not self._sink_ready():
            return
        loop = self.connection.loop
        now = loop.time()
        while self._queue:
            due, item = self._queue[0]
            if due > now:
                self._timer = loop.call_at(due, self.flush)
                break
            self._queue.popleft()
            if isinstance(item, bytes):
                self._queued_bytes -= len(item)
                self.connection.counters.hold(self.direction, -len(item))
            self._deliver(item)
        if self._queued_bytes <= MAX_QUEUED_BYTES // 2:
            self.source.resume("queue_full")

    def drop(self) -> None:
        """The sink is gone: forget what was waiting for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self.connection.counters.hold(self.direction, -self._queued_bytes)
        self._queued_bytes = 0
        self.source.resume("queue_full")

    def _sink_ready(self) -> bool:
        return self.sink.transport is not None and not self.sink.closed

    def _deliver(self, item: bytes | _Marker) -> None:
        transport = self.sink.transport
        if self.sink.closed or transport is None:
            return
        if item is _Marker.CLOSE:
            transport.close()  # sends what is buffered, then FIN
        elif item is _Marker.EOF:
            self.ended = True
            if transport.can_write_eof():
                try:
                    transport.write_eof()
                except OSError:
                    # The peer is gone already (ENOTCONN: reset before we saw it): nothing
                    # more can reach it, so drop the socket as a reset would have.
                    self.sink.abort(reset=False)
                    return
            if self.connection.both_ended():
                # Each peer has sent FIN and heard the other's: nothing more can flow.
                self.connection.client.transport.close()
                self.connection.upstream.transport.close()
        else:
            transport.write(item)
            self.connection.count(self.direction, len(item))


class Connection:
    """A client connection accepted by the proxy and its connection to the upstream."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        faults: FaultState,
        counters: RelayCounters,
        on_closed,
    ) -> None:
        self.loop = loop
        self.faults = faults
        self.counters = counters
        self._on_closed = on_closed
        self.client = _Side(self, "client")
        self.upstream = _Side(self, "upstream")
        self.to_upstream = _Stream(self, Direction.TO_UPSTREAM, self.client, self.upstream)
        self.to_client = _Stream(self, Direction.TO_CLIENT, self.upstream, self.client)
        self.client.outgoing = self.upstream.incoming = self.to_upstream
        self.upstream.outgoing = self.client.incoming = self.to_client
        self.aborted = False
        self._opening = True
        self._finished = False
        if faults.blackholed:
            self.blackhole()

    async def open(self, sock: socket.socket, upstream: tuple[str, int]) -> bool:
        """Adopt the accepted socket and connect upstream; False if the upstream is unreachable."""
        try:
            try:
                await self.loop.connect_accepted_socket(lambda: self.client, sock)
            except OSError:
                sock.close()
                self.client.closed = True
                return False
            try:
                await self.loop.create_connection(lambda: self.upstream, *upstream)
            except OSError:
                # Nothing listens upstream: the client sees what a dead server gives, a reset.
                self.abort(reset=True)
                return False
            if self.aborted:
                self.upstream.abort(reset=True)
            return True
        finally:
            self._opening = False
            self.side_closed()

    def count(self, direction: Direction, size: int) -> None:
        if direction is Direction.TO_UPSTREAM:
            self.counters.bytes_to_upstream += size
        else:
            self.counters.bytes_to_client += size

    def both_ended(self) -> bool:
        return self.to_upstream.ended and self.to_client.ended

    def blackhole(self) -> None:
        """Stop reading both sockets and hold back whatever is queued."""
        self.client.pause("blackhole")
        self.upstream.pause("blackhole")

    def unblackhole(self) -> None:
        """Read again and let held bytes go, each no earlier than its own delay allows."""
        self.client.resume("blackhole")
        self.upstream.resume("blackhole")
        self.to_upstream.flush()
        self.to_client.flush()

    def abort(self, *, reset: bool) -> None:
        """Close both sockets at once; reset sends RST to both peers."""
        self.aborted = True
        self.client.abort(reset=reset)
        self.upstream.abort(reset=reset)

    def side_closed(self) -> None:
        """Report the connection closed once neither socket is left (or ever will be)."""
        if self._finished or self._opening:
            return
        upstream_done = self.upstream.closed or self.upstream.transport is None
        if self.client.closed and upstream_done:
            self._finished = True
            self._on_closed(self)
