"""The admin routes in the OpenAPI document: present only while ADMIN_API_KEYS is set.

While no admin key is configured every /admin route answers 404, so the document leaves
them out, as it leaves out keys while API_KEYS is empty: it describes the running API.
"""

from __future__ import annotations

from typing import Any

from taskcore.envelope import TASK_ID_PATTERN
from taskcore.status import TaskState

ADMIN_SECURITY: list[dict[str, list]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
ADMIN_KEY_NOTE = "Needs an admin key (ADMIN_API_KEYS), never a submit key."

_FILTER_FIELDS: dict[str, Any] = {
    "task_ids": {
        "description": "These tasks: a list, or one comma-separated string.",
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
    },
    "message_ids": {
        "description": "These dead letters, by Pub/Sub message id.",
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
    },
    "task_type": {"type": "string"},
    "error": {"type": "string", "description": "Error type or message contains this (any case)."},
    "since": {
        "type": "string",
        "description": "Dead-lettered since: 30m, 2h, 7d (ago) or an ISO 8601 time.",
        "examples": ["2h"],
    },
}


_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": TASK_ID_PATTERN},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _html(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return response


# The dashboard's own pages answer in HTML, refusals included: a person reads them.
_THROTTLED_PAGE = _html("The sign-in form: too many failed sign-ins.", retry_after=True)


def _redirect(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string"}}},
    }


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, or null: a null field means the same as a missing one."""
    if "oneOf" in schema:
        return {**schema, "oneOf": [*schema["oneOf"], {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def admin_schemas() -> dict[str, Any]:
    """The request body schemas of the admin routes (the responses are pydantic models)."""
    selection = {
        "all": {"type": "boolean", "description": "Every dead letter (JSON true only)."},
        **_FILTER_FIELDS,
        "limit": {"type": "integer", "minimum": 1},
        "dry_run": {"type": "boolean"},
    }
    replay = {
        **selection,
        "rate": {
            "description": "At most this many per second: N/s, N/m or N/h, or a number.",
            "oneOf": [{"type": "string"}, {"type": "number", "minimum": 0}],
        },
        "set": {
            "type": "object",
            "description": "Payload fields to patch before republishing: field: value.",
        },
    }
    purge = {**selection, "archive": {"type": "boolean"}}
    return {
        "DlqReplayRequest": {
            "type": "object",
            "description": "Which dead letters to republish, and how. Unknown fields are refused.",
            "additionalProperties": False,
            "properties": {name: _nullable(schema) for name, schema in replay.items()},
        },
        "DlqPurgeRequest": {
            "type": "object",
            "description": "Which dead letters to remove for good. Unknown fields are refused.",
            "additionalProperties": False,
            "properties": {name: _nullable(schema) for name, schema in purge.items()},
        },
    }


def admin_paths(errors) -> dict[str, Any]:
    """The /admin paths; `errors(*codes)` gives the shared error responses."""

    def operation(summary: str, responses: dict[str, Any], **extra) -> dict[str, Any]:
        return {
            "summary": summary,
            "description": ADMIN_KEY_NOTE,
            "tags": ["admin"],
            "security": ADMIN_SECURITY,
            "responses": responses,
            **extra,
        }

    def ok(model: str, description: str = "OK") -> dict[str, Any]:
        return {"200": {"description": description, "content": _json(_ref(model))}}

    filters = [
        _query(name, {"type": "string"}, schema.get("description", ""))
        for name, schema in _FILTER_FIELDS.items()
    ]
    return {
        "/admin/dlq": {
            "get": operation(
                "Dead letters with their reasons; nothing is consumed",
                {**ok("DeadLetterList"), **errors("400", "401", "429", "503")},
                parameters=[*filters, _query("limit", {"type": "integer", "minimum": 1})],
            )
        },
        "/admin/dlq/{task_id}": {
            "get": operation(
                "A task's dead letters in full, with its status record",
                {**ok("DeadLetterRecords"), **errors("401", "404", "429", "503")},
                parameters=[
                    {
                        "name": "task_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/admin/dlq/replay": {
            "post": operation(
                "Republish the chosen dead letters to the task topic",
                {
                    **ok("DlqOperationResult"),
                    **errors("400", "401", "403", "415", "422", "429", "503"),
                },
                requestBody={"required": True, "content": _json(_ref("DlqReplayRequest"))},
            )
        },
        "/admin/dlq/purge": {
            "post": operation(
                "Remove the chosen dead letters for good (optionally archiving them)",
                {**ok("DlqOperationResult"), **errors("400", "401", "403", "415", "429", "503")},
                requestBody={"required": True, "content": _json(_ref("DlqPurgeRequest"))},
            )
        },
        "/admin/tasks": {
            "get": operation(
                "Recent tasks, newest change first, a page at a time",
                {**ok("TaskList"), **errors("400", "401", "429", "503")},
                parameters=[
                    _query("status", {"type": "string", "enum": [s.value for s in TaskState]}),
                    _query("limit", {"type": "integer", "minimum": 1}, "At most 200."),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page."),
                ],
            )
        },
        "/admin/tasks/{task_id}": {
            "get": operation(
                "One task in depth: payload, attempts, history, errors, outputs",
                {**ok("TaskDetail"), **errors("400", "401", "404", "429", "503")},
                parameters=[_TASK_ID],
            )
        },
        "/admin/tasks/{task_id}/outputs/{name}": {
            "get": operation(
                "One output of a succeeded task (as GET /tasks/{task_id}/outputs/{name})",
                {
                    "200": {
                        "description": "The content, with the output's Content-Type.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "304": {"description": "Not modified (If-None-Match)."},
                    **errors("400", "401", "404", "409", "429", "503"),
                    "410": {
                        "description": "The output's object is gone from storage.",
                        "content": _json(_ref("ErrorResponse")),
                    },
                },
                parameters=[
                    _TASK_ID,
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
            )
        },
        "/admin/overview": {
            "get": operation(
                "The last hour per minute, tasks running now, and each subscription's backlog",
                {**ok("Overview"), **errors("401", "429", "503")},
            )
        },
        "/admin": {
            "get": {
                "summary": "The dashboard, or its sign-in form",
                "tags": ["admin"],
                "security": [],
                "responses": {
                    "200": _html("The dashboard (signed in by cookie or admin key header)."),
                    "400": _html("The sign-in form: a key in the URL (?key=) is refused."),
                    "401": _html("The sign-in form."),
                    "429": _THROTTLED_PAGE,
                },
            }
        },
        "/admin/task/{task_id}": {
            "get": {
                "summary": "The dashboard's page of one task, or the sign-in form",
                "tags": ["admin"],
                "security": [],
                "parameters": [_TASK_ID],
                "responses": {
                    "200": _html("The task's page (signed in by cookie or admin key header)."),
                    "400": _html(
                        "The sign-in form when a key is in the URL (?key=); a page saying so "
                        "when the id is not a task id."
                    ),
                    "401": _html("The sign-in form."),
                    "429": _THROTTLED_PAGE,
                },
            }
        },
        "/admin/sign-in-links": {
            "post": operation(
                "A one-time sign-in link for a browser (single use, expires in minutes)",
                {
                    "201": {"description": "The link.", "content": _json(_ref("SignInLink"))},
                    **errors("401", "403", "429", "503"),
                },
            )
        },
        "/admin/sign-in": {
            "get": {
                "summary": "Redeem a sign-in link: a session cookie, then the dashboard",
                "tags": ["admin"],
                "security": [],
                "parameters": [
                    {"name": "code", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "303": _redirect("Signed in: on to the dashboard, without the code."),
                    "401": _html("The sign-in form: the link is used, expired or mistyped."),
                    "429": _THROTTLED_PAGE,
                    **errors("503"),
                },
            }
        },
        "/admin/login": {
            "post": {
                "summary": "Sign the browser in with an admin key (the sign-in form)",
                "tags": ["admin"],
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["key"],
                                "properties": {"key": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "303": _redirect("Signed in: a session cookie, and on to the dashboard."),
                    "401": _html("The sign-in form again: the key is not valid."),
                    "429": _THROTTLED_PAGE,
                    **errors("403", "503"),
                },
            }
        },
        "/admin/logout": {
            "post": {
                "summary": "Sign this browser out",
                "tags": ["admin"],
                "security": [],
                "responses": {
                    "303": _redirect("Signed out everywhere: back to the sign-in form."),
                    **errors("403", "503"),
                },
            }
        },
    }
