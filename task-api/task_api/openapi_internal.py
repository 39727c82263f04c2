"""The routes Cloud Scheduler calls (/internal/*) in the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

INTERNAL_SECURITY: list[dict[str, list]] = [{"googleIdToken": []}]
INTERNAL_NOTE = (
    "For Cloud Scheduler: with SCHEDULER_SERVICE_ACCOUNT set, only that account's Google ID "
    "token is let in (Authorization: Bearer); unset (the local stack), anyone."
)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def internal_paths(errors: Callable[..., dict[str, Any]], *, guarded: bool) -> dict[str, Any]:
    """The tick and the periodic firings; open (no security) while SCHEDULER_SERVICE_ACCOUNT
    is unset, as the running API is."""
    security = INTERNAL_SECURITY if guarded else []
    refusals = ("401", "403") if guarded else ()
    return {
        "/internal/tick": {
            "post": {
                "summary": "Publish delayed tasks that came due, fire due periodic tasks, "
                "start executions where tasks wait",
                "description": INTERNAL_NOTE,
                "tags": ["internal"],
                "security": security,
                "responses": {
                    "200": {"description": "What the tick did.", "content": _json(_ref("Tick"))},
                    **errors(*refusals, "503"),
                },
            }
        },
        "/internal/fire/{task_type}": {
            "post": {
                "summary": "One firing of a periodic task type",
                "description": "The firing is named by X-CloudScheduler-ScheduleTime (default: "
                "the schedule's latest time): the same firing is the same task, however "
                f"often it is called. {INTERNAL_NOTE}",
                "tags": ["internal"],
                "security": security,
                "parameters": [
                    {
                        "name": "task_type",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "X-CloudScheduler-ScheduleTime",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "format": "date-time"},
                    },
                ],
                "responses": {
                    "202": {"description": "Fired.", "content": _json(_ref("Firing"))},
                    **errors("400", *refusals, "404", "503"),
                },
            }
        },
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def internal_schemas() -> dict[str, Any]:
    ids = {"type": "array", "items": {"type": "string"}}
    return {
        "Tick": {
            "type": "object",
            "required": ["published", "dropped", "fired", "started"],
            "properties": {
                "published": {**ids, "description": "Delayed tasks published now."},
                "dropped": {**ids, "description": "Delayed tasks cancelled before they were due."},
                "fired": {**ids, "description": "Periodic firings (task ids)."},
                "started": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "Worker tasks started, by queue.",
                },
            },
        },
        "Firing": {
            "type": "object",
            "required": ["task_id", "task_type", "queue", "scheduled_at"],
            "properties": {
                "task_id": {"type": "string"},
                "task_type": {"type": "string"},
                "queue": {"type": "string"},
                "scheduled_at": {"type": "string", "format": "date-time"},
            },
        },
    }
