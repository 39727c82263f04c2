"""The dashboard's sign-in: an admin key turned into an HttpOnly, SameSite=Strict cookie.

A browser cannot send a header when it first opens /admin, so the key arrives once (login
form, or ?key= which is then dropped from the URL) and comes back as a cookie holding a
signed, expiring token, not the key itself. Page scripts cannot read that cookie; the page
is rendered with a CSRF token (an HMAC of the session under the same key) that its requests
send as a header, which another site can neither read nor set. API clients keep sending the
key itself as a header (`require_admin_key`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Callable

from flask import Response, g, request

from task_api.auth import key_matches, presented_key, require_admin_key

COOKIE = "taskctl_admin"
CSRF_HEADER = "X-Admin-CSRF"
SESSION_SECONDS = 8 * 3600
_VERSION = "v1"


def _sign(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def issue_token(key: str, now: float | None = None) -> str:
    """A session token signed with the admin key; it names no key and expires."""
    issued = int(now if now is not None else time.time())
    return f"{_VERSION}.{issued}.{_sign(key, f'{_VERSION}.{issued}')}"


def csrf_token(key: str, token: str) -> str:
    """The header value the dashboard's requests carry for this session."""
    return _sign(key, f"csrf.{token}")


def key_for_token(token: str | None, allowed: frozenset[str]) -> str | None:
    """The admin key that signed a live token, else None (every key is tried, in constant time)."""
    if not token or not allowed:
        return None
    version, _, rest = token.partition(".")
    issued_text, _, signature = rest.partition(".")
    if version != _VERSION or not issued_text.isdigit():
        return None
    if not 0 <= time.time() - int(issued_text) <= SESSION_SECONDS:
        return None
    found = None
    for key in allowed:
        expected = _sign(key, f"{version}.{issued_text}")
        if hmac.compare_digest(expected.encode(), signature.encode()) and found is None:
            found = key
    return found


def session_key(*, require_csrf: bool) -> str | None:
    """The admin key behind this request's dashboard cookie (and CSRF header, if required)."""
    from task_api.services import services

    allowed = services().settings.admin_api_keys
    token = request.cookies.get(COOKIE)
    key = key_for_token(token, allowed)
    if key is None:
        return None
    if require_csrf:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(key, token).encode()):
            return None
    return key


def valid_admin_key(key: str | None) -> bool:
    """Whether key is one of ADMIN_API_KEYS."""
    from task_api.services import services

    allowed = services().settings.admin_api_keys
    return bool(key and allowed and key_matches(key, allowed))


def set_session_cookie(response: Response, key: str) -> str:
    """Sign the browser in with key; returns the session token."""
    token = issue_token(key)
    secure = request.is_secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path="/admin",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    return token


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="Strict")


def admin_required(view: Callable) -> Callable:
    """`require_admin_key`, or else a dashboard session cookie with its CSRF header."""
    by_header = require_admin_key(view)

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if presented_key() is None:
            key = session_key(require_csrf=True)
            if key is not None:
                g.admin_key = key
                return view(*args, **kwargs)
        g.admin_key = presented_key()
        return by_header(*args, **kwargs)

    return guarded
