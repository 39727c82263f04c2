"""Where the background writer puts `queued` records: StatusStore.create's semantics, less CPU.

A status record is one small create-only object write. Through google-cloud-storage that
costs about 0.85 ms of CPU in the API process (requests, resumable-media, retry wrappers),
more than serving the submit itself, and on a small instance it halves the request rate.
The same write as one multipart POST on google-auth's urllib3 transport (which adds and
refreshes the credentials exactly as the client library does) costs about 0.4 ms. Anything
but a real storage.Client (a test's fake) gets StatusStore itself.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Protocol
from urllib.parse import quote

import urllib3
from google.auth.transport.urllib3 import AuthorizedHttp
from google.cloud import storage

from taskcore.errors import InfrastructureError
from taskcore.status import StatusStore, TaskStatus, status_object_name

log = logging.getLogger(__name__)

# Transient answers worth another try; anything else (403, 404 bucket) will not get better.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# On the request path (the record is written before the 202): a few tries, briefly.
RETRY_DELAYS_SECONDS = (0.1, 0.4)
REQUEST_TIMEOUT = urllib3.Timeout(connect=2.0, read=3.0)


class StatusSink(Protocol):
    """Anything with StatusStore.create's contract."""

    def create(self, status: TaskStatus) -> bool: ...


class CreateOnlyObjectWriter:
    """Create-only writes of small objects over one keep-alive connection (one per thread)."""

    def __init__(self, client: storage.Client, bucket_name: str) -> None:
        base = client._connection.API_BASE_URL  # honours STORAGE_EMULATOR_HOST and endpoints
        self._url = (
            f"{base}/upload/storage/v1/b/{quote(bucket_name, safe='')}/o"
            "?uploadType=multipart&ifGenerationMatch=0"
        )
        self._http = AuthorizedHttp(client._credentials)

    def create(self, name: str, data: bytes, content_type: str) -> bool:
        """Write the object unless it exists; False when it already did."""
        for delay in (*RETRY_DELAYS_SECONDS, None):
            try:
                status = self._post(name, data, content_type)
            except urllib3.exceptions.HTTPError as exc:
                status, error = None, exc
            else:
                error = None
            if status is not None and status < 300:
                return True
            if status == 412:
                return False
            if delay is None or (status is not None and status not in RETRY_STATUSES):
                raise InfrastructureError(
                    f"create of {name} failed: {status or type(error).__name__}"
                )
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _post(self, name: str, data: bytes, content_type: str) -> int:
        boundary = uuid.uuid4().hex
        metadata = json.dumps({"name": name, "contentType": content_type})
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{metadata}\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        response = self._http.request(
            "POST",
            self._url,
            body=body,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            timeout=REQUEST_TIMEOUT,
            retries=False,
        )
        return response.status


class LeanStatusStore:
    """StatusStore.create over CreateOnlyObjectWriter."""

    def __init__(self, client: storage.Client, bucket_name: str) -> None:
        self._writer = CreateOnlyObjectWriter(client, bucket_name)

    def create(self, status: TaskStatus) -> bool:
        """Write the record only if none exists yet; False when one already did."""
        return self._writer.create(
            status_object_name(status.task_id),
            status.model_dump_json().encode(),
            "application/json",
        )


def status_sink(storage_client: Any, bucket: Any, retry: Any) -> StatusSink:
    """The lean sink on a real client; StatusStore (with retry) on anything else."""
    if isinstance(storage_client, storage.Client):
        return LeanStatusStore(storage_client, bucket.name)
    return StatusStore(bucket, retry=retry)
