"""Dashboard sessions and one-time sign-in codes, kept in the bucket so every process agrees.

The API runs as several gunicorn processes on several Cloud Run instances; a session made
by one must work on all and end on all. So a session is an object,
`admin-sessions/<sha256 of its id>.json` (created with if_generation_match=0), holding
which admin key it belongs to (by SHA-256, never the key) and when it expires. The id
itself is 256 random bits that only the browser's cookie holds: the bucket names objects
by its hash, so reading the bucket does not yield a usable cookie. Logout deletes the object.

Each process caches what it read for CACHE_SECONDS, so a logout (or expiry) on one process
reaches the others within CACHE_SECONDS: that is the revocation delay. The process that
handled the logout forgets the session at once.

A sign-in code (`admin-sign-in-codes/<sha256>.json`) is the same thing for a link: made
by an admin-key holder, valid for CODE_SECONDS, and good for one sign-in: redeeming it
deletes the object on the condition that it is the generation just read, so of two
concurrent redeemers exactly one succeeds.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud.storage.retry import DEFAULT_RETRY

from taskcore.errors import InfrastructureError

SESSION_PREFIX = "admin-sessions/"
CODE_PREFIX = "admin-sign-in-codes/"
SESSION_SECONDS = 8 * 3600
CODE_SECONDS = 10 * 60
CACHE_SECONDS = 5.0
CACHE_ENTRIES = 10_000
# secrets.token_urlsafe(32): 43 characters of the URL-safe alphabet.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_STORAGE_ERRORS = (gexc.GoogleAPIError, requests.RequestException)
# On the request path: a slow bucket becomes a 503, not a hang. Every write is conditional
# or idempotent, so retrying within the bound is safe.
_TIMEOUT_SECONDS = 3.0
_BOUNDED = {"timeout": _TIMEOUT_SECONDS, "retry": DEFAULT_RETRY.with_timeout(_TIMEOUT_SECONDS)}


def key_digest(key: str) -> str:
    """How a session names its admin key: SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def _object(prefix: str, token: str) -> str:
    return f"{prefix}{hashlib.sha256(token.encode()).hexdigest()}.json"


@dataclass(frozen=True)
class Grant:
    """What a live session or code stands for: an admin key (by digest), until a time."""

    key_digest: str
    expires_at: float

    def to_json(self) -> str:
        return json.dumps({"key_sha256": self.key_digest, "expires_at": self.expires_at})

    @classmethod
    def from_json(cls, data: bytes) -> Grant | None:
        try:
            record: Any = json.loads(data)
            return cls(str(record["key_sha256"]), float(record["expires_at"]))
        except (ValueError, TypeError, KeyError):
            return None


class AdminSessions:
    """Sessions and sign-in codes in the bucket, with a short per-process cache of sessions."""

    def __init__(
        self,
        bucket: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._bucket = bucket
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        # session id -> (when read, grant or None): bounded, oldest dropped first.
        self._cache: OrderedDict[str, tuple[float, Grant | None]] = OrderedDict()

    # --- sessions -----------------------------------------------------------------------------

    def create(self, key_digest: str) -> str:
        """A new session for this admin key; returns its id (the cookie value)."""
        session_id = secrets.token_urlsafe(32)
        grant = Grant(key_digest, self.clock() + SESSION_SECONDS)
        self._write(_object(SESSION_PREFIX, session_id), grant)
        self._remember(session_id, grant)
        return session_id

    def lookup(self, session_id: str | None) -> Grant | None:
        """The live session with this id, or None (malformed, unknown, expired, revoked)."""
        if not session_id or not _TOKEN.fullmatch(session_id):
            return None  # not one of ours: no need to ask the bucket
        now = self.clock()
        with self._lock:
            cached = self._cache.get(session_id)
        if cached is not None and now - cached[0] < self.cache_seconds:
            grant = cached[1]
        else:
            grant = self._read(_object(SESSION_PREFIX, session_id))
            if grant is not None and grant.expires_at <= now:
                self._delete(_object(SESSION_PREFIX, session_id))  # over: tidy it away
                grant = None
            self._remember(session_id, grant)
        if grant is None or grant.expires_at <= now:
            return None
        return grant

    def revoke(self, session_id: str | None) -> None:
        """End the session everywhere (other processes within CACHE_SECONDS)."""
        if not session_id or not _TOKEN.fullmatch(session_id):
            return
        with self._lock:
            self._cache.pop(session_id, None)
        self._delete(_object(SESSION_PREFIX, session_id))

    # --- one-time sign-in codes ---------------------------------------------------------------

    def mint_code(self, key_digest: str) -> tuple[str, float]:
        """A sign-in code for this admin key and when it expires."""
        code = secrets.token_urlsafe(32)
        grant = Grant(key_digest, self.clock() + CODE_SECONDS)
        self._write(_object(CODE_PREFIX, code), grant)
        return code, grant.expires_at

    def redeem_code(self, code: str | None) -> Grant | None:
        """The code's grant if it is live and this is its first use, else None; it is used up."""
        if not code or not _TOKEN.fullmatch(code):
            return None
        name = _object(CODE_PREFIX, code)
        grant, generation = self._read_pinned(name)
        if grant is None:
            return None
        if not self._delete(name, if_generation_match=generation):
            return None  # someone else redeemed it first
        return grant if grant.expires_at > self.clock() else None

    # --- the bucket ---------------------------------------------------------------------------

    def _remember(self, session_id: str, grant: Grant | None) -> None:
        with self._lock:
            self._cache[session_id] = (self.clock(), grant)
            self._cache.move_to_end(session_id)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def _write(self, name: str, grant: Grant) -> None:
        try:
            self._bucket().blob(name).upload_from_string(
                grant.to_json(),
                content_type="application/json",
                if_generation_match=0,
                **_BOUNDED,
            )
        except _STORAGE_ERRORS as exc:
            raise InfrastructureError(f"admin session write failed: {type(exc).__name__}") from exc

    def _read(self, name: str) -> Grant | None:
        try:
            return Grant.from_json(self._bucket().blob(name).download_as_bytes(**_BOUNDED))
        except gexc.NotFound:
            return None
        except _STORAGE_ERRORS as exc:
            raise InfrastructureError(f"admin session read failed: {type(exc).__name__}") from exc

    def _read_pinned(self, name: str) -> tuple[Grant | None, int | None]:
        """The record and the generation it was read at (None, None if there is none)."""
        blob = self._bucket().blob(name)
        try:
            blob.reload(**_BOUNDED)
            generation = int(blob.generation)
            data = blob.download_as_bytes(if_generation_match=generation, **_BOUNDED)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return None, None
        except _STORAGE_ERRORS as exc:
            raise InfrastructureError(f"sign-in code read failed: {type(exc).__name__}") from exc
        return Grant.from_json(data), generation

    def _delete(self, name: str, *, if_generation_match: int | None = None) -> bool:
        try:
            self._bucket().blob(name).delete(if_generation_match=if_generation_match, **_BOUNDED)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return False
        except _STORAGE_ERRORS as exc:
            raise InfrastructureError(f"admin session delete failed: {type(exc).__name__}") from exc
        return True
