"""POST /uploads: store one multipart file under uploads/ in the bucket, create-only by default.

A multipart POST is what an HTML form on any site can send, so an upload must also carry a
header no form can: an API key (X-API-Key or Authorization: Bearer), or else
X-Requested-With with any value (`curl -F file=@x -H 'X-Requested-With: curl' ...`).
"""

from __future__ import annotations

import io
import logging
from typing import IO

import requests
from flask import Blueprint, Response, jsonify, request
from google.api_core import exceptions as gexc
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import secure_filename

from task_api.auth import caller_id, presented_key, require_submit_key
from task_api.inputs import CHECK_TIMEOUT_SECONDS, OWNER
from task_api.request_body import MULTIPART_OVERHEAD_BYTES
from task_api.services import services
from taskcore.errors import ApiRequestError, InfrastructureError
from taskcore.payloads import check_object_name

log = logging.getLogger(__name__)

bp = Blueprint("uploads", __name__)

UPLOAD_PREFIX = "uploads/"
_TRUE = {"1", "true", "yes", "on"}
# An upload is a `file` part and maybe a `name`; werkzeug's default allows 1,000 parts.
MAX_FORM_PARTS = 16
FORM_PROOF_HEADER = "X-Requested-With"


@bp.post("/uploads")
@require_submit_key
def upload() -> tuple[Response, int]:
    """Store the `file` part as uploads/<name>; 409 if it exists unless ?overwrite=true."""
    api = services()
    limit = api.settings.max_upload_bytes
    if request.mimetype != "multipart/form-data":
        raise ApiRequestError(
            f"Content-Type must be multipart/form-data, not {request.mimetype or 'missing'}",
            status=415,
            code="unsupported_media_type",
        )
    if presented_key() is None and not request.headers.get(FORM_PROOF_HEADER, "").strip():
        raise ApiRequestError(
            f"uploads need an API key or an {FORM_PROOF_HEADER} header (any value): "
            "an HTML form on another site can send neither",
            status=403,
            code="cross_site_upload_refused",
        )
    # Werkzeug stops reading (413) once the body passes this, before spooling it all to disk.
    request.max_content_length = limit + MULTIPART_OVERHEAD_BYTES
    request.max_form_parts = MAX_FORM_PARTS
    try:
        file = request.files.get("file")
        given_name = request.form.get("name")
    except RequestEntityTooLarge as exc:
        raise _form_too_large(exc, limit) from None
    if file is None:
        raise ApiRequestError(
            "multipart field 'file' is required",
            code="missing_file",
            details=[{"field": "file", "message": "field required", "type": "missing"}],
        )
    name = _object_name(given_name, file.filename)
    size = _stream_size(file.stream)
    if size > limit:
        raise _too_large(limit)
    object_name = UPLOAD_PREFIX + name
    content_type = file.mimetype or "application/octet-stream"
    overwrite = request.args.get("overwrite", "").lower() in _TRUE
    owner = caller_id()
    blob = api.clients.bucket.blob(object_name)
    # Create-only unless overwriting; an overwrite is conditional on the generation checked
    # to be the caller's own, so two racing uploads of one name cannot both succeed.
    replacing = _replaceable(api, object_name, owner) if overwrite else 0
    blob.metadata = {OWNER: owner}
    try:
        blob.upload_from_file(
            file.stream,
            size=size,
            content_type=content_type,
            if_generation_match=replacing,
        )
    except gexc.PreconditionFailed:
        raise ApiRequestError(
            f"{object_name} already exists (or changed meanwhile); add ?overwrite=true to "
            "replace your own upload",
            status=409,
            code="upload_exists",
        ) from None
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise InfrastructureError(f"upload of {object_name} failed: {type(exc).__name__}") from exc
    log.info("upload stored", extra={"json_fields": {"object": object_name, "size": size}})
    uri = f"gs://{api.settings.bucket_name}/{object_name}"
    body = {
        "name": name,
        "object": object_name,
        "uri": uri,
        "size": size,
        "content_type": content_type,
    }
    return jsonify(body), 201


def _replaceable(api, object_name: str, owner: str) -> int:
    """The generation an overwrite may replace (0: none exists); 403 for another key's upload.

    Tasks already submitted with the old upload keep their pinned generation: they fail as
    missing_input rather than read what replaced it.
    """
    blob = api.clients.bucket.blob(object_name)
    try:
        blob.reload(timeout=CHECK_TIMEOUT_SECONDS)
    except gexc.NotFound:
        return 0
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise InfrastructureError(
            f"upload check of {object_name} failed: {type(exc).__name__}"
        ) from exc
    current = (blob.metadata or {}).get(OWNER)
    if api.settings.api_keys and current != owner:
        raise ApiRequestError(
            f"{object_name} was uploaded with another API key (or by an operator): only its "
            "uploader may replace it; upload under another name",
            status=403,
            code="upload_not_yours",
        )
    return int(blob.generation)


def _object_name(given: str | None, filename: str | None) -> str:
    """The caller's `name` as given (checked), else the file's own name made safe."""
    field, name = ("name", given) if given else ("file", secure_filename(filename or ""))
    try:
        return check_object_name(name)
    except ValueError as exc:
        raise ApiRequestError(
            f"invalid object name: {exc}",
            code="invalid_object_name",
            details=[{"field": field, "message": str(exc), "type": "invalid_object_name"}],
        ) from None


def _stream_size(stream: IO[bytes]) -> int:
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    return size


def _too_large(limit: int) -> ApiRequestError:
    return ApiRequestError(
        f"file is larger than the {limit}-byte upload limit", status=413, code="upload_too_large"
    )


def _form_too_large(exc: RequestEntityTooLarge, limit: int) -> ApiRequestError:
    """The refusal that names what the form exceeded: its size, its part count or a text field.

    Werkzeug raises the same RequestEntityTooLarge for all three; where it was raised tells.
    """
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    raised_in = frame.tb_frame.f_code.co_name if frame is not None else ""
    if raised_in == "next_event":  # werkzeug.sansio.multipart: one part too many
        return ApiRequestError(
            f"the form has more than {MAX_FORM_PARTS} parts; an upload is one `file` part "
            "and an optional `name`",
            code="too_many_form_parts",
        )
    if raised_in in ("receive_data", "parse"):  # a text field over max_form_memory_size
        return ApiRequestError(
            f"a text field of the form is over {request.max_form_memory_size} bytes",
            status=413,
            code="form_field_too_large",
        )
    return _too_large(limit)
