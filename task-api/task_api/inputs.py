"""The inputs a submitted task names: checked now, and pinned to what they are now.

A task may read only objects of the pipeline's bucket under INPUT_PREFIXES, no larger than
MAX_INPUT_BYTES, and (with API keys on) only uploads made with the caller's own key. Each is
refused here with a 400/403 rather than dead-lettered later, and the generation it has now is
written into the envelope, so the worker reads exactly the object that was submitted even if
someone uploads over it afterwards.
"""

from __future__ import annotations

import requests
from google.api_core import exceptions as gexc
from google.cloud.storage.retry import DEFAULT_RETRY

from taskcore.errors import ApiRequestError, InfrastructureError, InputNotAllowedError
from taskcore.inputs import check_input_uri
from taskcore.settings import Settings

# Metadata key of an upload naming who made it (a submit key's id, or "anonymous").
OWNER = "owner"
# A check on the request path: bounded, so a slow bucket becomes a 503, not a hang.
CHECK_TIMEOUT_SECONDS = 3.0
_CHECK_RETRY = DEFAULT_RETRY.with_timeout(CHECK_TIMEOUT_SECONDS)


def _refused(uri: str, message: str, code: str, status: int = 400) -> ApiRequestError:
    return ApiRequestError(
        message,
        status=status,
        code=code,
        details=[{"field": "input", "uri": uri, "message": message, "type": code}],
    )


def pin_inputs(settings: Settings, bucket, uris: list[str], caller: str) -> dict[str, int]:
    """{input URI: generation} for each input a task names; ApiRequestError if one may not be
    read: outside the allowed prefixes, missing, too large, or another key's upload."""
    pinned: dict[str, int] = {}
    for uri in uris:
        try:
            name = check_input_uri(uri, settings)
        except InputNotAllowedError as exc:
            raise _refused(uri, str(exc), "input_not_allowed") from None
        blob = bucket.blob(name)
        try:
            blob.reload(timeout=CHECK_TIMEOUT_SECONDS, retry=_CHECK_RETRY)
        except gexc.NotFound:
            raise _refused(
                uri, f"input {uri} does not exist (upload it first)", "input_missing"
            ) from None
        except (gexc.GoogleAPIError, requests.RequestException) as exc:
            raise InfrastructureError(f"input check of {uri} failed: {type(exc).__name__}") from exc
        if int(blob.size or 0) > settings.max_input_bytes:
            raise _refused(
                uri,
                f"input {uri} is {blob.size} bytes; inputs are limited to "
                f"{settings.max_input_bytes} (MAX_INPUT_BYTES)",
                "input_too_large",
            )
        owner = (blob.metadata or {}).get(OWNER)
        # Objects placed by operators carry no owner: any caller may use them.
        if settings.api_keys and owner is not None and owner != caller:
            raise _refused(
                uri, f"input {uri} was uploaded with another API key", "input_not_yours", 403
            )
        pinned[uri] = int(blob.generation)
    return pinned
