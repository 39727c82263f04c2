"""Throttling admin key guesses: failed attempts counted per client and overall.

Every way of presenting an admin key counts: the sign-in form, a sign-in link's code, and
an admin key header on /admin. Past CLIENT_FAILURES failures from one client, or
OVERALL_FAILURES from all clients together, within WINDOW_SECONDS, attempts are answered
429 with Retry-After *before* the key is looked at, so a throttled guesser learns nothing,
whatever it sends. The counts live in each API process: with W gunicorn workers on N
instances the limits are W x N times these.

The client is the connection's address, or behind TRUSTED_PROXY_HOPS proxies the
X-Forwarded-For entry the nearest trusted proxy wrote (counted from the right: anything
left of it is whatever the client chose to send). IPv6 clients are counted by /64, the
block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from flask import Request

CLIENT_FAILURES = 10
OVERALL_FAILURES = 100
WINDOW_SECONDS = 300.0
_MAX_CLIENT_TEXT = 64


def client_address(request: Request, trusted_hops: int) -> str:
    """Who is asking, as far as can be known without trusting what the client wrote."""
    address = request.remote_addr or "unknown"
    if trusted_hops > 0:
        entries = [
            entry.strip()
            for header in request.headers.getlist("X-Forwarded-For")
            for entry in header.split(",")
            if entry.strip()
        ]
        # Fewer entries than trusted proxies: the header is not theirs; keep the connection's.
        if len(entries) >= trusted_hops:
            address = entries[-trusted_hops]
    return _normalized(address)


def _normalized(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:_MAX_CLIENT_TEXT]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SignInThrottle:
    """Sliding-window counts of failed sign-ins, per client and overall; thread-safe."""

    def __init__(
        self,
        *,
        per_client: int = CLIENT_FAILURES,
        overall: int = OVERALL_FAILURES,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._all: deque[float] = deque()
        # At most `overall` failures are ever recorded per window, so this stays small.
        self._clients: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until this client may try again, or None if it may try now."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            waits = [
                times[0] + self.window - now
                for times, limit in (
                    (self._all, self.overall),
                    (self._clients.get(client), self.per_client),
                )
                if times is not None and len(times) >= limit
            ]
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, client: str) -> None:
        """Count one failed attempt by this client."""
        with self._lock:
            now = self.clock()
            self._all.append(now)
            self._clients.setdefault(client, deque()).append(now)

    def succeeded(self, client: str) -> None:
        """A right key: the client's earlier typos no longer count against it."""
        with self._lock:
            self._clients.pop(client, None)

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for client in [c for c, times in self._clients.items() if times[-1] <= horizon]:
            del self._clients[client]
        for times in self._clients.values():
            while times[0] <= horizon:
                times.popleft()
