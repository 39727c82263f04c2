"""The admin dashboard at GET /admin: server-rendered HTML with a little inline JS, no build step.

Sign-in is by the admin key, once, through the login form or ?key= (then redirected away
so the key leaves the address bar and history); the browser keeps a session cookie.
The page talks to the admin API with that cookie plus a CSRF header.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, redirect, render_template, request, url_for

from task_api.admin_session import (
    COOKIE,
    CSRF_HEADER,
    clear_session_cookie,
    csrf_token,
    session_key,
    set_session_cookie,
    valid_admin_key,
)
from task_api.auth import presented_key
from task_api.services import services
from taskcore.errors import ApiRequestError

bp = Blueprint("dashboard", __name__)


def _admin_enabled() -> None:
    if not services().settings.admin_api_keys:
        # As require_admin_key: while admin is off, do not reveal that the page exists.
        raise ApiRequestError("the admin API is not enabled", status=404, code="not_found")


def _secured(response: Response, nonce: str | None = None) -> Response:
    # The page shows text from dead letters (payloads, error messages): scripts run only
    # when they carry this response's nonce, and the page cannot be framed.
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_page(error: str | None = None, status: int = 401) -> Response:
    response = Response(render_template("admin_login.html", error=error), status=status)
    return _secured(response)


def _to_dashboard(key: str) -> Response:
    response = redirect(url_for("admin.dashboard.page"), code=303)
    set_session_cookie(response, key)
    return _secured(response)


@bp.get("")
def page() -> Response:
    """The dashboard, or the login form when the browser is not signed in."""
    _admin_enabled()
    if "key" in request.args:
        key = request.args["key"]
        if valid_admin_key(key):
            return _to_dashboard(key)
        return _login_page("That admin key is not valid.")
    key = session_key(require_csrf=False)
    token = request.cookies.get(COOKIE)
    response = Response()
    if key is None:
        header_key = presented_key()
        if not valid_admin_key(header_key):
            return _login_page()
        key = header_key
        token = set_session_cookie(response, key)
    nonce = secrets.token_urlsafe(16)
    response.set_data(
        render_template(
            "admin_dashboard.html",
            csrf=csrf_token(key, token),
            csrf_header=CSRF_HEADER,
            nonce=nonce,
            settings=services().settings,
        )
    )
    response.mimetype = "text/html"
    return _secured(response, nonce)


@bp.post("/login")
def login() -> Response:
    """Sign in with the admin key from the form."""
    _admin_enabled()
    key = request.form.get("key", "")
    if valid_admin_key(key):
        return _to_dashboard(key)
    return _login_page("That admin key is not valid.")


@bp.post("/logout")
def logout() -> Response:
    """Forget this browser's session."""
    _admin_enabled()
    response = redirect(url_for("admin.dashboard.page"), code=303)
    clear_session_cookie(response)
    return _secured(response)
