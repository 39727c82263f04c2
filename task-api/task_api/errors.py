"""Every error the API returns, as JSON: {"error": {"code", "message", "details"?}}.

Handlers are registered in one place so a new route cannot leak an HTML error page.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, jsonify
from google.auth.exceptions import DefaultCredentialsError
from werkzeug.exceptions import HTTPException

from taskcore.errors import ApiRequestError, InfrastructureError, InvalidTaskError

log = logging.getLogger(__name__)

# Long enough for a brief Pub/Sub outage to pass, short enough that clients come back soon.
RETRY_AFTER_SECONDS = 5


class RetryLaterError(ApiRequestError):
    """An ApiRequestError whose answer tells the client when to try again (Retry-After)."""

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER_SECONDS, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


def error_response(status: int, code: str, message: str, details=None) -> Response:
    """A JSON error response with the given status."""
    body: dict = {"code": code, "message": message}
    if details:
        body["details"] = details
    response = jsonify(error=body)
    response.status_code = status
    return response


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _api_request_error(exc: ApiRequestError) -> Response:
    response = error_response(exc.status, exc.code, str(exc), exc.details)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _invalid_task(exc: InvalidTaskError) -> Response:
    return error_response(400, exc.error_type, str(exc), exc.details)


def _infrastructure(exc: InfrastructureError) -> Response:
    log.warning("dependency unavailable: %s", exc)
    response = error_response(
        503, "service_unavailable", "the task queue or storage is unavailable; try again shortly"
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _no_credentials(exc: DefaultCredentialsError) -> Response:
    # A deployment problem, not the caller's: say "unavailable", and say why in the log.
    log.error("no Google credentials: %s", exc)
    response = error_response(
        503, "service_unavailable", "the service has no credentials for its backends; see its logs"
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _http(exc: HTTPException) -> Response:
    code = "request_too_large" if exc.code == 413 else _snake(exc.name)
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    # Keep the headers werkzeug means to send, e.g. Allow on 405.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "an unexpected error occurred")


def register_error_handlers(app: Flask) -> None:
    """Make every error the app can raise answer as JSON."""
    app.register_error_handler(ApiRequestError, _api_request_error)
    app.register_error_handler(InvalidTaskError, _invalid_task)
    app.register_error_handler(InfrastructureError, _infrastructure)
    app.register_error_handler(DefaultCredentialsError, _no_credentials)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)
