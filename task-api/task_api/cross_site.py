"""What every response and every state-changing request gets, whatever the route.

A browser sends `Sec-Fetch-Site` with each request: `cross-site` or `same-site` on a POST
means a page of another origin made it (a form, or a fetch that needs no preflight), which
no client of this API does: browsers cannot call it across origins anyway (it sends no
CORS headers, and a key header needs a preflight). Such writes answer 403 before anything
else runs, so an open local API cannot be driven from a web page the developer visits.
Browsers too old to send the header are covered by the routes' own checks (JSON
Content-Type, the upload header).

Every response says `X-Content-Type-Options: nosniff`: error bodies echo what the client
sent, and must never be sniffed into HTML.
"""

from __future__ import annotations

from flask import Flask, Response, request

from taskcore.errors import ApiRequestError

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FOREIGN_SITES = frozenset({"cross-site", "same-site"})


def refuse_cross_site_writes() -> None:
    """Answer 403 to a state-changing request a page of another origin made."""
    if request.method in UNSAFE_METHODS and request.headers.get("Sec-Fetch-Site") in FOREIGN_SITES:
        raise ApiRequestError(
            "a web page of another origin may not send this request (Sec-Fetch-Site: "
            f"{request.headers['Sec-Fetch-Site']})",
            status=403,
            code="cross_site_request",
        )


def no_sniffing(response: Response) -> Response:
    """Mark every response's Content-Type as the only way to read it."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def install(app: Flask) -> None:
    """Apply both to every route of the app."""
    app.before_request(refuse_cross_site_writes)
    app.after_request(no_sniffing)
