"""Reading a JSON object body, with the 415 and 400 answers the API promises."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from taskcore.errors import ApiRequestError


def json_object(*, empty_means: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; an empty body gives `empty_means` when that is set."""
    raw = limited_body()
    if empty_means is not None and not raw.strip():
        return dict(empty_means)
    if not request.is_json:
        raise ApiRequestError(
            f"Content-Type must be application/json, not {request.mimetype or 'missing'}",
            status=415,
            code="unsupported_media_type",
        )
    try:
        body = json.loads(raw)
    except ValueError as exc:  # also UnicodeDecodeError: the body is not UTF-8
        raise ApiRequestError(f"body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiRequestError(
            f"body must be a JSON object, not a JSON {_json_kind(body)}", code="not_an_object"
        )
    return body


def limited_body() -> bytes:
    """The body, or a 413 past MAX_CONTENT_LENGTH (the app's MAX_REQUEST_BYTES), chunked too.

    A declared Content-Length over the limit is refused before anything is read. A chunked
    body is read up to the limit, but werkzeug then stops without an error and hands back
    a truncated body: reading up to one byte more tells a body over the limit from one
    exactly at it.
    """
    limit = request.max_content_length
    chunked = request.content_length is None
    if chunked and limit is not None:
        request.max_content_length = limit + 1
    try:
        raw = request.get_data()
    except RequestEntityTooLarge:
        raise too_large(limit) from None
    if limit is not None and len(raw) > limit:
        raise too_large(limit)
    return raw


def too_large(limit: int | None) -> ApiRequestError:
    """The 413 for a request body over the limit."""
    return ApiRequestError(
        f"the request body is larger than the {limit}-byte limit (MAX_REQUEST_BYTES)",
        status=413,
        code="request_too_large",
    )


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
