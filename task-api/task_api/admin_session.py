"""Who may use /admin: an admin key as a header, or a dashboard session cookie plus CSRF header.

A browser cannot send a header when it first opens /admin, so it signs in once (the form,
or a one-time sign-in link) and then carries an HttpOnly, SameSite=Strict cookie holding a
random session id, never the key (sessions: task_api.admin_sessions). Page scripts cannot
read that cookie; the page is rendered with a CSRF token derived from the session id, which
its requests send as a header that another site can neither read nor set.

Every admin key presented, by whatever door, goes through `check_admin_key`: throttled per
client and overall (task_api.sign_in_throttle) and logged when wrong
(event admin_sign_in_failed), never with the key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Response, g, request

from task_api.admin_sessions import SESSION_SECONDS, key_digest
from task_api.auth import key_matches, presented_key
from task_api.errors import RetryLaterError
from task_api.sign_in_throttle import client_address
from taskcore.errors import ApiRequestError
from taskcore.events import Event

log = logging.getLogger(__name__)

COOKIE = "taskctl_admin"
CSRF_HEADER = "X-Admin-CSRF"


class SignInThrottled(RetryLaterError):
    """Raised when a client (or everyone) failed too many admin sign-ins recently: 429."""


@dataclass(frozen=True)
class Session:
    """A live dashboard session: its id (the cookie) and the admin key it stands for."""

    id: str
    key: str


def csrf_token(session_id: str) -> str:
    """The header value the dashboard's requests carry for this session."""
    return hmac.new(session_id.encode(), b"admin-csrf", hashlib.sha256).hexdigest()


def _services():
    from task_api.services import services

    return services()


def admin_enabled() -> None:
    """404 while ADMIN_API_KEYS is empty: do not even reveal that the routes exist."""
    if not _services().settings.admin_api_keys:
        raise ApiRequestError("the admin API is not enabled", status=404, code="not_found")


def _client() -> str:
    return client_address(request, _services().settings.trusted_proxy_hops)


def refuse_if_throttled() -> None:
    """Raise SignInThrottled (429) while this client may not present a key or code."""
    wait = _services().sign_in_throttle.retry_after(_client())
    if wait is not None:
        raise SignInThrottled(
            f"too many failed admin sign-ins; try again in {wait} s",
            status=429,
            code="too_many_sign_in_attempts",
            retry_after=wait,
        )


def sign_in_failed(reason: str) -> None:
    """Count and log a wrong key or code from this client."""
    client = _client()
    _services().sign_in_throttle.failed(client)
    log.warning(
        "admin sign-in refused",
        extra={
            "json_fields": {
                "event": Event.ADMIN_SIGN_IN_FAILED,
                "client": client,
                "reason": reason,
                "path": request.path,
            }
        },
    )


def check_admin_key(key: str | None, *, reason: str = "invalid_admin_key") -> bool:
    """Whether key is one of ADMIN_API_KEYS; throttled (429 first) and logged when wrong."""
    refuse_if_throttled()
    allowed = _services().settings.admin_api_keys
    if key and allowed and key_matches(key, allowed):
        _services().sign_in_throttle.succeeded(_client())
        return True
    sign_in_failed(reason)
    return False


def _key_by_digest(digest: str) -> str | None:
    # A key removed from ADMIN_API_KEYS takes its sessions with it.
    found = None
    for key in _services().settings.admin_api_keys:
        if hmac.compare_digest(key_digest(key), digest):
            found = key
    return found


def current_session() -> Session | None:
    """The live session this request's cookie names, if any."""
    session_id = request.cookies.get(COOKIE)
    grant = _services().admin_sessions.lookup(session_id)
    if grant is None:
        return None
    key = _key_by_digest(grant.key_digest)
    return Session(session_id, key) if key is not None else None


def mint_sign_in_code(key: str) -> tuple[str, float]:
    """A one-time sign-in code for the holder of key, and when it expires (epoch seconds)."""
    return _services().admin_sessions.mint_code(key_digest(key))


def redeem_sign_in_code(code: str | None) -> str | None:
    """The admin key a live, unused code stands for (using it up), else None."""
    grant = _services().admin_sessions.redeem_code(code)
    return _key_by_digest(grant.key_digest) if grant is not None else None


def start_session(response: Response, key: str) -> Session:
    """Sign the browser in as the holder of key: a new session and its cookie."""
    session_id = _services().admin_sessions.create(key_digest(key))
    secure = request.is_secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=SESSION_SECONDS,
        path="/admin",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    return Session(session_id, key)


def end_session(response: Response) -> None:
    """Revoke this browser's session (everywhere) and drop its cookie."""
    _services().admin_sessions.revoke(request.cookies.get(COOKIE))
    response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="Strict")


def admin_required(view: Callable) -> Callable:
    """An admin key header, or else a dashboard session cookie with its CSRF header."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        admin_enabled()
        # A dashboard session (cookie + CSRF header) comes first, unless an X-API-Key says
        # otherwise: behind Cloud Run IAM (`gcloud run services proxy`) every request also
        # carries the user's identity token in Authorization, which is no admin key.
        session = None if request.headers.get("X-API-Key") else current_session()
        sent = request.headers.get(CSRF_HEADER, "")
        if session is not None and hmac.compare_digest(
            sent.encode(), csrf_token(session.id).encode()
        ):
            g.admin_key = session.key
            return view(*args, **kwargs)
        key = presented_key()
        if key is None:
            raise ApiRequestError(
                "this admin route needs an admin key (X-API-Key), or a dashboard session "
                f"cookie with its {CSRF_HEADER} header",
                status=401,
                code="missing_api_key",
            )
        if not check_admin_key(key):
            raise ApiRequestError(
                "the API key is not valid for this route", status=401, code="invalid_api_key"
            )
        g.admin_key = key
        return view(*args, **kwargs)

    return guarded
