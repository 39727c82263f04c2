"""Discoverability: GET /task-types, GET /openapi.json and GET /docs (no API key needed)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template

from task_api.openapi import openapi_document
from task_api.services import services

bp = Blueprint("meta", __name__)

_DOCUMENT_KEY = "task_api.openapi"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@bp.get("/task-types")
def task_types() -> Response:
    """The registered task types with the JSON Schema of their fields."""
    return jsonify(
        task_types=[
            {"name": t.name, "description": t.description, "schema": t.json_schema()}
            for t in services().registry
        ]
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(document())


@bp.get("/docs")
def docs() -> str:
    """The OpenAPI document as a self-contained page: operations, parameters and schemas."""
    doc = document()
    operations = [
        {"path": path, "method": method.upper(), **operation}
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    schemas = {
        name: json.dumps(schema, indent=2) for name, schema in doc["components"]["schemas"].items()
    }
    return render_template("docs.html", doc=doc, operations=operations, schemas=schemas)


def document() -> dict[str, Any]:
    """The app's document, built once: the registry and settings do not change at run time."""
    cached = current_app.extensions.get(_DOCUMENT_KEY)
    if cached is None:
        api = services()
        cached = current_app.extensions[_DOCUMENT_KEY] = openapi_document(
            api.registry, api.settings
        )
    return cached
