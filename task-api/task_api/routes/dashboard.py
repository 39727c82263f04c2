"""The admin dashboard at GET /admin: server-rendered HTML with a little inline JS, no build step.

Sign-in is by the admin key through the form (POST, so the key never sits in a URL, a
log or the history), or by a one-time sign-in link that an admin-key holder asked for
(POST /admin/sign-in-links; `make run` prints one). The browser then keeps a session
cookie and the page talks to the admin API with it plus a CSRF header.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, url_for
from markupsafe import escape

from task_api.admin_session import (
    CSRF_HEADER,
    SignInThrottled,
    admin_enabled,
    admin_required,
    check_admin_key,
    csrf_token,
    current_session,
    end_session,
    mint_sign_in_code,
    redeem_sign_in_code,
    refuse_if_throttled,
    sign_in_failed,
    start_session,
)
from task_api.admin_sessions import CODE_SECONDS
from task_api.auth import presented_key
from task_api.routes.status import checked_task_id
from task_api.services import services
from taskcore.errors import ApiRequestError

bp = Blueprint("dashboard", __name__)

# How often the pages poll the admin API while auto-refresh is on.
REFRESH_SECONDS = 5
KEY_IN_URL = (
    "An admin key in a URL ends up in logs and browser history, so it is not accepted: "
    "sign in with the form."
)


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


def _throttled_page(exc: SignInThrottled) -> Response:
    response = _login_page(str(exc).capitalize() + ".", status=429)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _to_dashboard(key: str) -> Response:
    response = redirect(url_for("admin.dashboard.page"), code=303)
    start_session(response, key)
    return _secured(response)


@bp.get("")
def page() -> Response:
    """The dashboard, or the sign-in form when the browser is not signed in."""
    return _signed_in_page("admin_dashboard.html")


@bp.get("/task/<task_id>")
def task_page(task_id: str) -> Response:
    """One task in depth (its data comes from GET /admin/tasks/<task_id>)."""
    try:
        checked = checked_task_id(task_id)
    except ApiRequestError as exc:
        # A page, as every refusal of the dashboard's pages: a person reads it.
        return Response(
            "<!doctype html><meta charset=utf-8><title>Not a task id</title>"
            f"<p>{escape(str(exc))}</p>",
            status=400,
            mimetype="text/html",
        )
    return _signed_in_page("admin_task.html", task_id=checked)


def _signed_in_page(template: str, **context) -> Response:
    """template for a signed-in browser (a session, or an admin key header starts one), or
    the sign-in form."""
    admin_enabled()
    if "key" in request.args:
        return _login_page(KEY_IN_URL, status=400)
    session = current_session()
    response = Response()
    if session is None:
        header_key = presented_key()
        if header_key is None:
            return _login_page()
        try:
            if not check_admin_key(header_key):
                return _login_page("That admin key is not valid.")
        except SignInThrottled as exc:
            return _throttled_page(exc)
        session = start_session(response, header_key)
    nonce = secrets.token_urlsafe(16)
    response.set_data(
        render_template(
            template,
            csrf=csrf_token(session.id),
            csrf_header=CSRF_HEADER,
            nonce=nonce,
            settings=services().settings,
            refresh_seconds=REFRESH_SECONDS,
            **context,
        )
    )
    response.mimetype = "text/html"
    return _secured(response, nonce)


@bp.post("/login")
def login() -> Response:
    """Sign in with the admin key from the form."""
    admin_enabled()
    try:
        if check_admin_key(request.form.get("key", "")):
            return _to_dashboard(request.form["key"])
    except SignInThrottled as exc:
        return _throttled_page(exc)
    return _login_page("That admin key is not valid.")


@bp.post("/sign-in-links")
@admin_required
def create_sign_in_link() -> tuple[Response, int]:
    """A one-time sign-in link for a browser, valid for CODE_SECONDS."""
    code, expires_at = mint_sign_in_code(g.admin_key)
    path = url_for("admin.dashboard.sign_in", code=code)
    body = {
        "path": path,
        "url": request.host_url.rstrip("/") + path,
        "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat(),
        "expires_in": CODE_SECONDS,
    }
    return jsonify(body), 201


@bp.get("/sign-in")
def sign_in() -> Response:
    """Redeem a one-time sign-in link: a session, and on to the dashboard without the code."""
    admin_enabled()
    try:
        refuse_if_throttled()
    except SignInThrottled as exc:
        return _throttled_page(exc)
    key = redeem_sign_in_code(request.args.get("code"))
    if key is None:
        sign_in_failed("invalid_sign_in_code")
        return _login_page(
            "That sign-in link is not valid: it was used already, has expired, or is mistyped."
        )
    return _to_dashboard(key)


@bp.post("/logout")
def logout() -> Response:
    """End this browser's session everywhere."""
    admin_enabled()
    response = redirect(url_for("admin.dashboard.page"), code=303)
    end_session(response)
    return _secured(response)
