"""Liveness (/health, touches nothing) and readiness (/ready, checks the task topic)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from task_api.errors import RetryLaterError
from task_api.services import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    """Liveness only: the process is up and serving requests."""
    return jsonify(status="ok")


@bp.get("/ready")
def ready() -> Response:
    """Readiness: 200 when the task topic answers (cached ~2 s), else 503 with Retry-After."""
    answer = services().readiness.status()
    if not answer.ready:
        raise RetryLaterError(
            "the task queue is not reachable; tasks cannot be accepted right now",
            status=503,
            code="not_ready",
            details=[{"check": "topic", "error_type": answer.error_type or "unknown"}],
        )
    return jsonify(status="ready", checks={"topic": "ok"})
