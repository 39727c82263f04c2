"""A lean HTTP/1.1 load generator: one process, one thread, asyncio, keep-alive connections.

It shares the machine's cores with the server it measures, so it does as little as it can:
the request bytes are built once, responses are parsed just enough to find their end.

Closed loop (`--concurrency C --requests N`): C connections each send the next request as
soon as the previous answer arrives. Open loop (`--rate R --duration S`): request i is due at
start + i/R whatever happened before; its latency counts from when it was due, so a stall
shows up as latency rather than as fewer requests (no coordinated omission).

Prints one JSON object: {"started": epoch, "samples": [[offset_s, latency_s, status], ...]}.

    python bench/loadgen.py --url http://127.0.0.1:PORT/submit-task --body '{...}' \
        [--header 'Authorization: Bearer KEY'] (--concurrency 16 --requests 2000 |
        --rate 500 --duration 60 [--connections 64])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0
RESPONSE_TIMEOUT = 30.0


def build_request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    """host, port and the raw bytes of one keep-alive POST."""
    parts = urlsplit(url)
    path = parts.path or "/"
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
        *headers,
    ]
    return parts.hostname, parts.port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; (status, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, keep = 0, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
        elif name == b"transfer-encoding":
            raise RuntimeError("chunked responses are not expected from this API")
    if length:
        await reader.readexactly(length)
    return status, keep


class Connection:
    """One keep-alive connection, reopened after the server closes it or an error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> int:
        """Send raw and return the status; 0 for a transport error."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
                )
            self.writer.write(raw)
            status, keep = await asyncio.wait_for(read_response(self.reader), RESPONSE_TIMEOUT)
            if not keep:
                self.close()
            return status
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(host, port, raw, concurrency: int, total: int, start: float) -> list:
    """C connections, each sending back to back until `total` requests were sent."""
    samples, remaining = [], [total]

    async def client() -> None:
        conn = Connection(host, port)
        while remaining[0] > 0:
            remaining[0] -= 1
            sent = time.perf_counter()
            status = await conn.send(raw)
            samples.append((sent - start, time.perf_counter() - sent, status))
        conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples


async def open_loop(host, port, raw, rate: float, duration: float, connections: int, start):
    """Requests due at a fixed rate; latency counts from when each was due."""
    samples = []
    due: asyncio.Queue[float | None] = asyncio.Queue()

    async def client() -> None:
        conn = Connection(host, port)
        while (scheduled := await due.get()) is not None:
            status = await conn.send(raw)
            samples.append((scheduled - start, time.perf_counter() - scheduled, status))
        conn.close()

    workers = [asyncio.create_task(client()) for _ in range(connections)]
    total = int(rate * duration)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(scheduled)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return samples


def main(argv: list[str] | None = None) -> None:
    """Run one load and print the samples as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests/s")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    host, port, raw = build_request(args.url, args.body.encode(), args.header)
    started = time.time()
    start = time.perf_counter()
    if args.rate > 0:
        coro = open_loop(host, port, raw, args.rate, args.duration, args.connections, start)
    else:
        coro = closed_loop(host, port, raw, args.concurrency, args.requests, start)
    samples = asyncio.run(coro)
    json.dump({"started": started, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
