"""One relayed connection, driven by hand: what the proxy does when a peer is already gone."""

from __future__ import annotations

import asyncio
import errno

from chaos.relay import Connection, FaultState, RelayCounters


class GoneTransport(asyncio.Transport):
    """A socket whose peer reset it before the proxy noticed: shutdown(SHUT_WR) fails."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.written: list[bytes] = []

    def get_extra_info(self, name, default=None):
        return default

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    def write(self, data) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_an_eof_for_a_peer_that_is_already_gone_drops_that_socket_instead_of_raising():
    loop = asyncio.new_event_loop()
    try:
        connection = Connection(loop, FaultState(), RelayCounters(), on_closed=lambda c: None)
        client, upstream = GoneTransport(), GoneTransport()
        connection.client.connection_made(client)
        connection.upstream.connection_made(upstream)

        connection.client.data_received(b"last words")
        connection.client.eof_received()  # relayed as write_eof() on the upstream socket

        assert upstream.written == [b"last words"]
        assert upstream.aborted and not client.aborted
    finally:
        loop.close()
