"""What Cloud Scheduler calls: the dispatcher's tick and the firings of periodic tasks.

- POST /internal/tick (every minute on GCP, twice a second in the dev stack): publish delayed
  tasks that came due, leave due wake-ups, fire due periodic tasks, start executions for
  queues with uncovered demand. Safe to call any number of times, from anywhere.
- POST /internal/fire/<task_type>: one firing of a periodic task type. Cloud Scheduler's
  X-CloudScheduler-ScheduleTime header names the firing, so a retried or duplicated call is
  the same task (its id derives from the type and that time); without the header, the
  schedule's latest time at or before now.

With SCHEDULER_SERVICE_ACCOUNT set, only that service account may call: its Google-signed ID
token (Authorization: Bearer, as Cloud Scheduler sends it with an OIDC target) is verified.
Cloud Run IAM lets in any invoker; this keeps submit clients from firing schedules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

from flask import Blueprint, Response, jsonify, request

from dispatcher.periodic import latest_firing
from task_api.services import services
from taskcore.errors import ApiRequestError
from taskcore.status import utcnow

bp = Blueprint("internal", __name__, url_prefix="/internal")

SCHEDULE_TIME_HEADER = "X-CloudScheduler-ScheduleTime"


def verify_google_id_token(token: str) -> dict:
    """The claims of a Google-signed ID token; ValueError if it is not one (or expired)."""
    from google.auth.transport import requests as google_requests
    from google.oauth2 import id_token

    return id_token.verify_oauth2_token(token, google_requests.Request())


def require_scheduler(view: Callable) -> Callable:
    """Let in only SCHEDULER_SERVICE_ACCOUNT (anyone while it is unset)."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        account = services().settings.scheduler_service_account
        if account:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiRequestError(
                    "internal routes need the scheduler's ID token (Authorization: Bearer)",
                    status=401,
                    code="missing_id_token",
                )
            try:
                claims = verify_google_id_token(token.strip())
            except ValueError:
                raise ApiRequestError(
                    "the ID token is not valid", status=401, code="invalid_id_token"
                ) from None
            if claims.get("email") != account or not claims.get("email_verified"):
                raise ApiRequestError(
                    "this caller may not call internal routes", status=403, code="not_scheduler"
                )
        return view(*args, **kwargs)

    return guarded


@bp.post("/tick")
@require_scheduler
def tick() -> Response:
    """Publish what came due, fire due periodic tasks, dispatch each queue."""
    report = services().dispatcher.tick()
    return jsonify(report.as_dict())


@bp.post("/fire/<task_type>")
@require_scheduler
def fire(task_type: str) -> tuple[Response, int]:
    """Run one firing of periodic task type `task_type`."""
    api = services()
    declared = api.registry.get(task_type) if task_type in api.registry else None
    if declared is None or not declared.schedule:
        periodic = [t.name for t in api.registry if t.schedule]
        raise ApiRequestError(
            f"{task_type!r} is not a periodic task type; periodic types: "
            f"{', '.join(periodic) or 'none'}",
            status=404,
            code="not_periodic",
        )
    header = request.headers.get(SCHEDULE_TIME_HEADER)
    if header:
        try:
            scheduled_at = datetime.fromisoformat(header.replace("Z", "+00:00"))
        except ValueError:
            scheduled_at = None
        if scheduled_at is None or scheduled_at.tzinfo is None:
            raise ApiRequestError(
                f"{SCHEDULE_TIME_HEADER} must be an RFC 3339 time", code="invalid_schedule_time"
            )
    else:
        scheduled_at = latest_firing(declared, utcnow())
    task_id = api.dispatcher.fire(task_type, scheduled_at)
    api.accepted([declared.queue])
    body = {
        "task_id": task_id,
        "task_type": task_type,
        "queue": declared.queue,
        "scheduled_at": scheduled_at.isoformat(),
    }
    return jsonify(body), 202
