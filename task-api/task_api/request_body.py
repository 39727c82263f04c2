"""Reading a JSON object body, with the 415 and 400 answers the API promises.

Beyond being valid JSON, a body must hold only finite numbers (Python's parser accepts NaN,
Infinity and 1e999, none of which is JSON a consumer can rely on) and nest at most
MAX_JSON_DEPTH containers deep (deeper structures break serialization further on, in
pydantic and in the worker). Both answer 400 naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from taskcore.errors import ApiRequestError
from taskcore.settings import Settings

# Task payloads need a handful of levels; pydantic's serializer gives up at a few hundred.
MAX_JSON_DEPTH = 32
# Room for the multipart boundaries, part headers and the `name` field around an uploaded file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def largest_request_body(settings: Settings) -> int:
    """The largest body any route accepts: a JSON body, or an upload with its multipart."""
    return max(settings.max_request_bytes, settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES)


def json_object(
    *, empty_means: dict[str, Any] | None = None, check_values: bool = True
) -> dict[str, Any]:
    """The request body as a JSON object; an empty body gives `empty_means` when that is set.

    The empty-body default needs no Content-Type or a JSON one: an empty text/plain or form
    body is what a cross-site HTML form sends, and it is refused (415) like any other.
    check_values=False leaves the depth and number checks to the caller (a batch checks
    each of its tasks on its own).
    """
    raw = limited_body()
    if empty_means is not None and not raw.strip() and (request.is_json or not request.mimetype):
        return dict(empty_means)
    if not request.is_json:
        raise ApiRequestError(
            f"Content-Type must be application/json, not {request.mimetype or 'missing'}",
            status=415,
            code="unsupported_media_type",
        )
    try:
        body = json.loads(raw)
    except RecursionError:
        # Nested past what the parser itself can follow: nothing in the body can be named.
        raise _too_deep("(body)") from None
    except ValueError as exc:  # also UnicodeDecodeError: the body is not UTF-8
        raise ApiRequestError(f"body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiRequestError(
            f"body must be a JSON object, not a JSON {_json_kind(body)}", code="not_an_object"
        )
    if check_values:
        check_json_values(body)
    return body


def refuse_unknown_fields(body: dict[str, Any], allowed: Iterable[str], shape: str) -> None:
    """A 400 naming each field of body that is not allowed; `shape` says what the body is."""
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise ApiRequestError(
            f"unexpected fields {', '.join(extra)}; {shape}",
            code="schema_violation",
            details=[
                {"field": name, "message": "extra fields not permitted", "type": "extra_forbidden"}
                for name in extra
            ],
        )


def check_json_values(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise a 400 naming the first field that is nested too deep or is not a finite number."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            children = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            if isinstance(item, float) and not math.isfinite(item):
                raise ApiRequestError(
                    f"{path or '(body)'} is {item!r}: only finite numbers are accepted",
                    code="non_finite_number",
                    details=[_detail(path, "must be a finite number", "non_finite_number")],
                )
            continue
        if depth >= max_depth:
            raise _too_deep(path, max_depth)
        for key, child in children:
            stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))


def _too_deep(path: str, max_depth: int = MAX_JSON_DEPTH) -> ApiRequestError:
    # Named by its top-level field: the full path would be max_depth segments long.
    field = path.split(".", 1)[0]
    return ApiRequestError(
        f"{field or '(body)'} nests deeper than {max_depth} levels of arrays and objects",
        code="nesting_too_deep",
        details=[_detail(field, f"at most {max_depth} levels deep", "nesting_too_deep")],
    )


def _detail(path: str, message: str, kind: str) -> dict[str, str]:
    return {"field": path or "(body)", "message": message, "type": kind}


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
