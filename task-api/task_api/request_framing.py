"""Where an HTTP/1.x request ends, worked out incrementally as its bytes arrive.

BufferingThreadWorker reads requests in its event loop and needs to know when one is
complete: the header section, then a Content-Length body or a chunked one. This is only
framing, not parsing: anything malformed counts as complete, so that gunicorn's own parser
sees it at once and refuses it with its usual answer. Every byte is looked at once, so a
body arriving a byte at a time costs no more than one arriving whole.
"""

from __future__ import annotations

INCOMPLETE = "incomplete"
COMPLETE = "complete"  # whole, or malformed: either way gunicorn's parser can take it now
TOO_LARGE = "too_large"  # the body is over the limit: refuse without reading the rest

_MAX_CHUNK_LINE = 4096


class RequestFrame:
    """The bytes of one request as they arrive, and whether they make a whole request yet."""

    def __init__(self, max_header_bytes: int, max_body_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.buffer = bytearray()
        self.expects_continue = False
        self._scanned = 0  # how far the search for the end of the headers got
        self._body_start: int | None = None
        self._body_end: int | None = None  # a Content-Length body ends here
        self._chunked = False
        self._chunk_at = 0  # where the next chunk-size line (or trailer line) starts
        self._in_trailers = False
        self._decoded = 0
        self._state = INCOMPLETE

    @property
    def received(self) -> int:
        """How many bytes have arrived."""
        return len(self.buffer)

    def take(self) -> bytes:
        """Everything received (the request, and anything the client sent after it)."""
        return bytes(self.buffer)

    def feed(self, data: bytes) -> str:
        """Add bytes; INCOMPLETE, COMPLETE or TOO_LARGE."""
        self.buffer += data
        if self._state == INCOMPLETE:
            self._state = self._advance()
        return self._state

    def _advance(self) -> str:
        if self._body_start is None:
            headers_end = self._find_headers_end()
            if headers_end is None:
                return COMPLETE if len(self.buffer) > self.max_header_bytes else INCOMPLETE
            framing = self._read_headers(headers_end)
            if framing != INCOMPLETE:
                return framing
        if self._chunked:
            return self._advance_chunks()
        assert self._body_end is not None
        return COMPLETE if len(self.buffer) >= self._body_end else INCOMPLETE

    def _find_headers_end(self) -> int | None:
        start = max(0, self._scanned - 3)
        ends = [
            (index, len(marker))
            for marker in (b"\r\n\r\n", b"\n\n")
            if (index := self.buffer.find(marker, start)) >= 0
        ]
        self._scanned = len(self.buffer)
        if not ends:
            return None
        index, length = min(ends)
        return index + length

    def _read_headers(self, headers_end: int) -> str:
        self._body_start = headers_end
        lengths: set[bytes] = set()
        codings: list[bytes] = []
        request_line, *lines = bytes(self.buffer[:headers_end]).split(b"\n")
        http_11 = request_line.rstrip().endswith(b"HTTP/1.1")
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                lengths.add(value)
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"expect" and value.lower() == b"100-continue":
                self.expects_continue = http_11  # HTTP/1.0 clients must not get a 100
        if codings:
            if lengths or codings[-1] != b"chunked":
                return COMPLETE  # ambiguous framing: gunicorn refuses it
            self._chunked = True
            self._chunk_at = headers_end
            return INCOMPLETE
        if not lengths:
            self._body_end = headers_end
            return INCOMPLETE
        if len(lengths) > 1 or not (length := lengths.pop()).isdigit():
            return COMPLETE  # gunicorn refuses it
        if int(length) > self.max_body_bytes:
            return TOO_LARGE
        self._body_end = headers_end + int(length)
        return INCOMPLETE

    def _advance_chunks(self) -> str:
        while True:
            line_end = self.buffer.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                if len(self.buffer) - self._chunk_at > _MAX_CHUNK_LINE:
                    return COMPLETE  # a line gunicorn refuses
                return INCOMPLETE
            line = bytes(self.buffer[self._chunk_at : line_end])
            if self._in_trailers:
                self._chunk_at = line_end + 2
                if not line:
                    return COMPLETE  # the empty line after the trailers
                if self._chunk_at - self._body_start > self.max_header_bytes + self.max_body_bytes:
                    return COMPLETE  # trailers gunicorn refuses
                continue
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return COMPLETE  # gunicorn refuses the chunk
            if size == 0:
                self._in_trailers = True
                self._chunk_at = line_end + 2
                continue
            self._decoded += size
            if self._decoded > self.max_body_bytes:
                return TOO_LARGE
            chunk_end = line_end + 2 + size + 2
            if len(self.buffer) < chunk_end:
                self._decoded -= size  # counted again once the chunk is all here
                return INCOMPLETE
            self._chunk_at = chunk_end
