"""A succeeded task's outputs: GET /tasks/<id>/outputs (what there is) and
GET /tasks/<id>/outputs/<name> (one output's content, streamed).

Both need what GET /tasks/<id> needs (a submit key while API_KEYS is set). The outputs are
the ones the task's `succeeded` record names, each read at exactly the generation the record
pinned: a later write to the same object name is never served in its place. While the task
has not succeeded there is nothing to serve: 409 `task_not_succeeded`, naming the state, so
a client can tell "not yet" (or "never": dead-lettered, cancelled) from "unknown task" (404).

The content is served as an attachment unless its type is one a browser only displays
(text/plain, JSON, CSV, raster images), always with a sandboxing Content-Security-Policy:
an output is data a task wrote, and must not run as a page of this API's origin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import quote

import requests
from flask import Blueprint, Response, jsonify, request, url_for
from google.api_core import exceptions as gexc
from google.cloud.storage.retry import DEFAULT_RETRY

from task_api.auth import require_submit_key
from task_api.routes.status import checked_task_id, read_record
from task_api.services import services
from taskcore.errors import ApiRequestError, InfrastructureError
from taskcore.outputs import task_output_prefix
from taskcore.status import OutputRef, TaskState, TaskStatus

bp = Blueprint("outputs", __name__)

# Bytes fetched from storage per request while streaming: all of an output held in memory.
CHUNK_BYTES = 1024 * 1024
READ_TIMEOUT_SECONDS = 10.0
_READ_RETRY = DEFAULT_RETRY.with_timeout(READ_TIMEOUT_SECONDS)
# Types a browser shows and never executes: served inline; everything else is an attachment.
INLINE_TYPES = frozenset(
    {"text/plain", "text/csv", "application/json", "image/png", "image/jpeg", "image/gif"}
)
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def succeeded_record(task_id: str) -> TaskStatus:
    """The task's record if it succeeded; 404 for an unknown task, 409 for any other state."""
    record = read_record(checked_task_id(task_id))
    if record is None:
        raise ApiRequestError(f"no task {task_id} is known", status=404, code="task_not_found")
    if record.state != TaskState.SUCCEEDED:
        raise ApiRequestError(
            f"task {task_id} has no outputs: it is {record.state}, not succeeded",
            status=409,
            code="task_not_succeeded",
            details=[{"task_id": task_id, "state": str(record.state)}],
        )
    return record


def output_listing(record: TaskStatus, url_of: Callable[[str], str]) -> dict:
    """{task_id, outputs: [{name, size, content_type, uri, url}]}: url_of(name) is the
    API path of that output's content."""
    return {
        "task_id": record.task_id,
        "outputs": [
            {
                "name": output.name,
                "size": output.size,
                "content_type": output.content_type,
                "uri": output.uri,
                "url": url_of(output.name),
            }
            for output in record.outputs
        ],
    }


def output_content(record: TaskStatus, name: str) -> Response:
    """The content of the record's output `name`, at its pinned generation, streamed."""
    output = next((o for o in record.outputs if o.name == name), None)
    if output is None:
        raise ApiRequestError(
            f"task {record.task_id} has no output named {name!r}",
            status=404,
            code="output_not_found",
        )
    etag = str(output.generation) if output.generation is not None else None
    if etag is not None and request.if_none_match.contains(etag):
        return _with_output_headers(Response(status=304), output, etag)
    blob = _pinned_blob(record.task_id, output)
    response = Response(
        _chunks(blob),
        mimetype=None,
        content_type=output.content_type or blob.content_type or DEFAULT_CONTENT_TYPE,
        direct_passthrough=True,
    )
    response.headers["Content-Length"] = str(blob.size)
    return _with_output_headers(response, output, etag)


def _object_name(task_id: str, output: OutputRef) -> str:
    # The worker writes a task's outputs under outputs/<task_id>/ in the pipeline's bucket,
    # and nowhere else: a record naming any other object was not written by it, and a task's
    # key must never read beyond that task's outputs.
    prefix = f"gs://{services().settings.bucket_name}/{task_output_prefix(task_id)}"
    if not output.uri.startswith(prefix):
        raise ApiRequestError(
            f"output {output.name!r} of task {task_id} is not under {prefix}",
            status=404,
            code="output_not_found",
        )
    return output.uri[len("gs://") :].partition("/")[2]


def _pinned_blob(task_id: str, output: OutputRef):
    """The output's object at the generation the record pinned (its metadata, one request)."""
    name = _object_name(task_id, output)
    try:
        blob = services().clients.bucket.get_blob(
            name, generation=output.generation, timeout=READ_TIMEOUT_SECONDS, retry=_READ_RETRY
        )
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise InfrastructureError(f"output read of {task_id} failed: {type(exc).__name__}") from exc
    if blob is None:
        raise ApiRequestError(
            f"output {output.name!r} of task {task_id} is gone from storage "
            "(deleted, or that generation was replaced)",
            status=410,
            code="output_gone",
        )
    return blob


def _chunks(blob) -> Iterator[bytes]:
    # Range reads of the pinned generation: memory stays at one chunk whatever the size. A
    # failure mid-way can only cut the connection (the status line is gone); the client sees
    # fewer bytes than Content-Length said.
    for start in range(0, blob.size or 0, CHUNK_BYTES):
        end = min(start + CHUNK_BYTES, blob.size) - 1
        yield blob.download_as_bytes(
            start=start,
            end=end,
            checksum=None,
            timeout=READ_TIMEOUT_SECONDS,
            retry=_READ_RETRY,
        )


def _with_output_headers(response: Response, output: OutputRef, etag: str | None) -> Response:
    content_type = (output.content_type or "").split(";")[0].strip().lower()
    disposition = "inline" if content_type in INLINE_TYPES else "attachment"
    filename = output.name.rsplit("/", 1)[-1]
    response.headers["Content-Disposition"] = (
        f"{disposition}; filename*=UTF-8''{quote(filename, safe='')}"
    )
    # Whatever the type, the content never runs as a page of this origin.
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    # The same URL serves other bytes after a replay: revalidate each time (cheap: ETag).
    response.headers["Cache-Control"] = "private, no-cache"
    if etag is not None:
        response.set_etag(etag)
    return response


@bp.get("/tasks/<task_id>/outputs")
@require_submit_key
def list_outputs(task_id: str) -> tuple[Response, int, dict[str, str]]:
    """The outputs of a succeeded task: names, sizes, types, and where to fetch each."""
    record = succeeded_record(task_id)
    body = output_listing(
        record, lambda name: url_for("outputs.download_output", task_id=task_id, name=name)
    )
    return jsonify(body), 200, {"Cache-Control": "no-store"}


@bp.get("/tasks/<task_id>/outputs/<path:name>")
@require_submit_key
def download_output(task_id: str, name: str) -> Response:
    """One output's content, streamed from the generation the succeeded record names."""
    return output_content(succeeded_record(task_id), name)
