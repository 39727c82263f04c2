"""Reading a JSON object body, with the 415 and 400 answers the API promises."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from taskcore.errors import ApiRequestError


def json_object(*, empty_means: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; an empty body gives `empty_means` when that is set."""
    raw = request.get_data()
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


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
