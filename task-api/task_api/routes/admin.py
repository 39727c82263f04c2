"""The admin API: browse, replay and purge dead letters (tasks: routes/admin_tasks.py).

Every route needs an admin key (ADMIN_API_KEYS; 404 while none is configured) as a header,
or the dashboard's session cookie plus its CSRF header. Scans of the DLQ hold its messages
while they run, so this process runs one at a time: two at once would each see only part.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.routing import BaseConverter

from task_api.admin_session import admin_required
from task_api.request_body import json_object, refuse_unknown_fields
from task_api.routes import admin_tasks, dashboard
from task_api.services import services
from taskcore.clients import subscriber_client
from taskcore.dlq.audit import Actor, DlqUsageError
from taskcore.dlq.letters import DeadLetterFilter
from taskcore.dlq.purge import run_purge
from taskcore.dlq.replay import ReplayRefused, parse_rate, run_replay
from taskcore.dlq.scan import browse
from taskcore.errors import ApiRequestError
from taskcore.status import StatusStore


class DlqTaskIdConverter(BaseConverter):
    """A task id in /admin/dlq/<task_id>, except the names of the routes beside it."""

    regex = r"(?!(?:replay|purge)$)[^/]+"


# Registered on the app before the blueprint (converters belong to the URL map).
CONVERTERS = {"dlq_task_id": DlqTaskIdConverter}

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.register_blueprint(dashboard.bp)
bp.register_blueprint(admin_tasks.bp)

_scan_lock = threading.Lock()
# A replay runs within its request; a slower one belongs to `taskctl dlq replay`.
MAX_REPLAY_SECONDS = 120
MAX_LIST = 1000


def _filter(data: dict[str, Any]) -> DeadLetterFilter:
    try:
        return DeadLetterFilter.from_mapping(data)
    except ValueError as exc:
        raise ApiRequestError(str(exc), code="invalid_filter") from None


def _positive_int(data: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = data.get(name, default)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, bool | float):
        raise ApiRequestError(f"{name} must be a positive integer", code=f"invalid_{name}")
    return number


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None:  # null is the same as leaving it out
        return False
    if not isinstance(value, bool):
        raise ApiRequestError(f"{name} must be true or false", code=f"invalid_{name}")
    return value


def _actor() -> Actor:
    return Actor.api_key(g.admin_key)


def _store() -> StatusStore:
    return StatusStore(services().clients.bucket)


@bp.get("/dlq")
@admin_required
def list_dead_letters() -> Response:
    """Dead letters matching ?task_type, error, since, task_ids; none is consumed."""
    args = request.args.to_dict()
    limit = _positive_int(args, "limit", MAX_LIST)
    flt = _filter(args)
    settings = services().settings
    subscriber = subscriber_client(settings)
    try:
        with _scan_lock:
            listing = browse(settings, flt, store=_store(), limit=limit, subscriber=subscriber)
    finally:
        subscriber.close()
    return jsonify(
        in_dlq=listing.total,
        matched=listing.matched_count,
        dead_letters=[letter.summary() for letter in listing.shown],
        scan={
            "pulls": listing.stats.pulls,
            "redelivered": listing.stats.redelivered,
            "seconds": round(listing.stats.seconds, 3),
        },
    )


# Not "replay" or "purge": those are the POST routes beside it, and GET on them is a 405.
@bp.get("/dlq/<dlq_task_id:task_id>")
@admin_required
def show_dead_letter(task_id: str) -> Response:
    """A task's dead letters in full, with its status record."""
    settings = services().settings
    store = _store()
    subscriber = subscriber_client(settings)
    try:
        with _scan_lock:
            listing = browse(
                settings,
                DeadLetterFilter(task_ids=frozenset([task_id])),
                store=store,
                subscriber=subscriber,
            )
    finally:
        subscriber.close()
    if not listing.shown:
        raise ApiRequestError(f"no dead letter of task {task_id}", status=404, code="not_found")
    status = store.get(task_id)
    for letter in listing.shown:
        letter.status = status
    return jsonify(dead_letters=[letter.record() for letter in listing.shown])


# The fields replay and purge read; anything else is a typo that must not be ignored
# ({"all": true, "dryrun": true} would otherwise replay everything for real).
_SELECTION_FIELDS = frozenset({"all", "task_ids", "message_ids", "task_type", "error", "since"})
REPLAY_FIELDS = _SELECTION_FIELDS | {"dry_run", "limit", "rate", "set"}
PURGE_FIELDS = _SELECTION_FIELDS | {"dry_run", "limit", "archive"}


def _known_fields(body: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    refuse_unknown_fields(body, allowed, f"allowed: {', '.join(sorted(allowed))}")
    return body


def _rate(value: Any) -> float | None:
    try:
        rate = parse_rate(value)
    except ValueError as exc:
        raise ApiRequestError(str(exc), code="invalid_rate") from None
    if isinstance(value, bool) or (rate is not None and not math.isfinite(rate)):
        raise ApiRequestError("rate must be a finite number per s, m or h", code="invalid_rate")
    return rate


def _sets(body: dict[str, Any]) -> list[tuple[str, Any]]:
    patch = body.get("set")
    if patch is None:
        return []
    if not isinstance(patch, dict) or not all(isinstance(k, str) and k for k in patch):
        raise ApiRequestError("set must be an object of field: value", code="invalid_set")
    return list(patch.items())


@bp.post("/dlq/replay")
@admin_required
def replay() -> tuple[Response, int]:
    """Republish the chosen dead letters (JSON: filter fields, dry_run, limit, rate, set)."""
    body = _known_fields(json_object(), REPLAY_FIELDS)
    flt = _filter(body)
    rate = _rate(body.get("rate"))

    def confirm(count: int) -> bool:
        # Refused before anything is published: the scan then hands every message back.
        if rate and count / rate > MAX_REPLAY_SECONDS:
            raise ApiRequestError(
                f"{count} replays at {rate:g}/s would take over {MAX_REPLAY_SECONDS}s: "
                "raise the rate, set a limit, or use `taskctl dlq replay`",
                code="replay_too_long",
            )
        return True

    api = services()
    subscriber = subscriber_client(api.settings)
    try:
        with _scan_lock:
            result = run_replay(
                api.settings,
                flt,
                actor=_actor(),
                bucket=api.clients.bucket,
                publisher=api.clients.publisher,
                subscriber=subscriber,
                registry=api.registry,
                dry_run=_flag(body, "dry_run"),
                limit=_positive_int(body, "limit"),
                rate=rate,
                sets=_sets(body),
                confirm=confirm,
            )
    except DlqUsageError as exc:
        raise ApiRequestError(str(exc), code="no_selection") from None
    except ReplayRefused as exc:
        raise ApiRequestError(
            str(exc), status=422, code="invalid_patch", details=exc.problems
        ) from None
    finally:
        subscriber.close()
        api.backlog.invalidate()  # the dashboard shows the DLQ as it is after this
    return jsonify(result.as_dict()), 200


@bp.post("/dlq/purge")
@admin_required
def purge() -> tuple[Response, int]:
    """Remove the chosen dead letters (JSON: filter fields, archive, limit, dry_run)."""
    body = _known_fields(json_object(), PURGE_FIELDS)
    flt = _filter(body)
    api = services()
    subscriber = subscriber_client(api.settings)
    try:
        with _scan_lock:
            result = run_purge(
                api.settings,
                flt,
                actor=_actor(),
                bucket=api.clients.bucket,
                subscriber=subscriber,
                archive=_flag(body, "archive"),
                limit=_positive_int(body, "limit"),
                dry_run=_flag(body, "dry_run"),
            )
    except DlqUsageError as exc:
        raise ApiRequestError(str(exc), code="no_selection") from None
    finally:
        subscriber.close()
        api.backlog.invalidate()
    return jsonify(result.as_dict()), 200
