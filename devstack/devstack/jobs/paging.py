"""Page tokens for List calls: opaque to callers, stable while items come and go."""

from __future__ import annotations

import base64
import json

from devstack.jobs.wire import invalid

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page(items: list, key, request, parent: str) -> tuple[list, str]:
    """One page of items (sorted by key) after request.page_token, and the next token.

    The token holds the last key returned, not an offset, so items added or removed
    between calls neither repeat nor skip the others.
    """
    if request.page_size < 0:
        raise invalid("page_size must not be negative")
    size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = 0
    if request.page_token:
        try:
            token_parent, after = json.loads(base64.urlsafe_b64decode(request.page_token))
        except (ValueError, TypeError) as exc:
            raise invalid("invalid page_token") from exc
        if token_parent != parent:
            raise invalid("page_token belongs to a listing of another parent")
        start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
    found = items[start : start + size]
    token = ""
    if start + size < len(items):
        token = base64.urlsafe_b64encode(json.dumps([parent, key(found[-1])]).encode()).decode()
    return found, token
