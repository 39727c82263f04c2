"""Liveness: answers without touching Pub/Sub or Cloud Storage."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    """Liveness only: the process is up and serving requests."""
    return jsonify(status="ok")
