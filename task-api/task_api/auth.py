"""API keys: submit keys guard the submit routes, admin keys guard /admin; never both ways.

Keys arrive as `Authorization: Bearer <key>` or `X-API-Key: <key>` and are compared in
constant time. They are never logged. In production, Cloud Run IAM (no public invoker)
is the first gate; keys are the second.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Iterable

from flask import request

from taskcore.errors import ApiRequestError


def presented_key() -> str | None:
    """The key the request carries, if any: X-API-Key first, else Authorization: Bearer."""
    # X-API-Key wins: behind Cloud Run IAM a caller may put its Google ID token in
    # Authorization (Cloud Run passes the header on), and the key in X-API-Key.
    key = request.headers.get("X-API-Key")
    if key:
        return key
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def key_matches(presented: str, allowed: Iterable[str]) -> bool:
    """Constant-time membership: every allowed key is compared, whatever matches first."""
    candidate = presented.encode()
    found = False
    for key in allowed:
        found |= hmac.compare_digest(candidate, key.encode())
    return found


def check_key(allowed: frozenset[str], *, realm: str) -> None:
    """Raise a 401 ApiRequestError unless the request presents one of the allowed keys."""
    key = presented_key()
    if key is None:
        raise ApiRequestError(
            f"this {realm} route needs an API key (Authorization: Bearer)",
            status=401,
            code="missing_api_key",
        )
    if not key_matches(key, allowed):
        raise ApiRequestError(
            "the API key is not valid for this route", status=401, code="invalid_api_key"
        )


def require_submit_key(view: Callable) -> Callable:
    """Guard a submit route with API_KEYS (open when none are configured)."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        from task_api.services import services

        allowed = services().settings.api_keys
        if allowed:
            check_key(allowed, realm="submit")
        return view(*args, **kwargs)

    return guarded


def caller_id() -> str:
    """Who is submitting, as uploads and inputs record it: the submit key's id, or anonymous.

    Never the key itself (a non-reversible hash, as audit records name keys).
    """
    from task_api.services import services
    from taskcore.dlq.audit import key_id

    if not services().settings.api_keys:
        return ANONYMOUS
    key = presented_key()
    return key_id(key) if key else ANONYMOUS


ANONYMOUS = "anonymous"
