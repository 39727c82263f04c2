"""The API's OpenAPI 3.1 document, generated from the same pydantic models the routes validate with.

Request bodies of the submit routes are the registry's payload models, one per task type,
joined by oneOf with a discriminator on task_type; responses are task_api.schemas' models
and taskcore's TaskStatus. Adding a task type to the registry adds it here with no other change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

from task_api.idempotency import HEADER as IDEMPOTENCY_HEADER
from task_api.idempotency import KEY_PATTERN
from task_api.openapi_admin import admin_paths, admin_schemas
from task_api.openapi_internal import internal_paths, internal_schemas
from task_api.scheduling import MAX_DELAY_SECONDS
from task_api.schemas import ADMIN_RESPONSE_MODELS, MAX_BATCH_TASKS, RESPONSE_MODELS
from taskcore.envelope import TASK_ID_PATTERN
from taskcore.payloads import MAX_OBJECT_NAME_BYTES
from taskcore.settings import Settings
from taskcore.tasks import TaskRegistry

REF = "#/components/schemas/{model}"


def task_request_models(registry: TaskRegistry) -> dict[str, type[BaseModel]]:
    """task_type -> its payload model with a `task_type` const field added."""
    models = {}
    for task_type in registry:
        title = "".join(part.title() for part in task_type.name.split("_")) + "Task"
        models[task_type.name] = create_model(
            title,
            __base__=task_type.payload_model,
            __doc__=task_type.description or task_type.payload_model.__doc__,
            task_type=(Literal[task_type.name], Field(description="Selects the task type.")),
            delay_seconds=(
                float | None,
                Field(
                    None,
                    ge=0,
                    le=MAX_DELAY_SECONDS,
                    description="Hold the task this long before it runs (status `scheduled`).",
                ),
            ),
            run_at=(
                AwareDatetime | None,
                Field(None, description="Run the task at this time (not with delay_seconds)."),
            ),
        )
    return models


# --- the document ------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


TASK_ID_PARAMETER = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": TASK_ID_PATTERN},
}


OUTPUT_NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The output's name as the listing gives it (its url); it may contain '/'.",
    "schema": {"type": "string", "minLength": 1},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_ref("ErrorResponse"))}
    if retry_after:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return response


ERRORS = {
    "400": _error("Invalid request: field errors in details."),
    "401": _error("Missing or wrong API key (only when API_KEYS is set)."),
    "403": _error(
        "A cross-site request (Sec-Fetch-Site: cross-site or same-site), or an upload without "
        "an API key or X-Requested-With header."
    ),
    "404": _error("Not found."),
    "409": _error(
        "Conflict: the Idempotency-Key is still in flight (retry after Retry-After), "
        "or the upload name exists.",
        retry_after=True,
    ),
    "413": _error("Request body over MAX_REQUEST_BYTES, or the task over MAX_TASK_BYTES."),
    "415": _error("Wrong Content-Type."),
    "422": _error("The Idempotency-Key was already used with a different body."),
    "429": _error(
        "Too many failed admin sign-ins from this client, or from all clients together; "
        "retry after Retry-After.",
        retry_after=True,
    ),
    "503": _error("Pub/Sub (or Cloud Storage) is unavailable; retry after Retry-After.", True),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERRORS[code] for code in codes}


def _accepted() -> dict[str, Any]:
    return {
        "description": "Queued: Pub/Sub confirmed the message.",
        "headers": {
            "Location": {
                "description": "The task's status: GET /tasks/{task_id}.",
                "schema": {"type": "string"},
            },
            "Idempotent-Replayed": {
                "description": "`true` when this answers a repeat of an Idempotency-Key.",
                "schema": {"type": "string", "enum": ["true"]},
            },
        },
        "content": _json(_ref("TaskAccepted")),
    }


def _submit_operation(summary: str, body_schema: dict, *, required: bool) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["tasks"],
        "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
        "requestBody": {"required": required, "content": _json(body_schema)},
        "responses": {
            "202": _accepted(),
            **_errors("400", "401", "403", "409", "413", "415", "422", "503"),
        },
    }


def _paths(models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    file_model = models.get("file_processing")
    data_model = models.get("data_transformation")
    paths: dict[str, Any] = {
        "/submit-task": {
            "post": _submit_operation(
                "Queue one task of any registered type", _ref("SubmitTaskRequest"), required=True
            )
        },
        "/submit-tasks": {
            "post": {
                "summary": f"Queue up to {MAX_BATCH_TASKS} tasks; one result per item",
                "description": "202 when every item was queued, 207 when some were "
                "queued and some not (`rejected`: invalid, fix it; `failed`: Pub/Sub did not "
                "confirm, send it again), 400 `nothing_queued` when every item was rejected "
                "(the results are in error.details), 503 when nothing was queued because "
                "Pub/Sub is unavailable. "
                "Idempotency-Key is not supported here (400).",
                "tags": ["tasks"],
                "requestBody": {"required": True, "content": _json(_ref("BatchRequest"))},
                "responses": {
                    "202": {"description": "All queued.", "content": _json(_ref("BatchAccepted"))},
                    "207": {
                        "description": "Some items were not queued; see each result.",
                        "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
                        "content": _json(_ref("BatchAccepted")),
                    },
                    **_errors("400", "401", "403", "413", "415", "503"),
                },
            }
        },
        "/tasks/{task_id}": {
            "get": {
                "summary": "A task's status record",
                "tags": ["tasks"],
                "parameters": [TASK_ID_PARAMETER],
                "responses": {
                    "200": {
                        "description": "The status record.",
                        "content": _json(_ref("TaskStatus")),
                    },
                    **_errors("400", "401", "404", "503"),
                },
            },
            "delete": {
                "summary": "Cancel a task",
                "description": "A task that has not started is cancelled at once (200). A running "
                "one is asked to stop at its next check (202, `cancel_requested_at` set) and "
                "ends `cancelled`. A task that already finished is 409.",
                "tags": ["tasks"],
                "parameters": [TASK_ID_PARAMETER],
                "responses": {
                    "200": {
                        "description": "Cancelled.",
                        "content": _json(_ref("TaskStatus")),
                    },
                    "202": {
                        "description": "Running: asked to stop.",
                        "content": _json(_ref("TaskStatus")),
                    },
                    **_errors("400", "401", "404", "409", "503"),
                },
            },
        },
        "/tasks/{task_id}/outputs": {
            "get": {
                "summary": "A succeeded task's outputs: names, sizes, types, content URLs",
                "description": "409 `task_not_succeeded` (with the state in details) while "
                "the task has not succeeded: queued, running, retrying, dead-lettered or "
                "cancelled tasks have no outputs to show.",
                "tags": ["tasks"],
                "parameters": [TASK_ID_PARAMETER],
                "responses": {
                    "200": {"description": "The outputs.", "content": _json(_ref("TaskOutputs"))},
                    **_errors("400", "401", "404", "409", "503"),
                },
            }
        },
        "/tasks/{task_id}/outputs/{name}": {
            "get": {
                "summary": "One output's content, streamed",
                "description": "Exactly the object generation the succeeded record names. "
                "Plain text, JSON, CSV and raster images are served inline, anything else "
                "as an attachment; an ETag (the generation) allows If-None-Match. 409 while "
                "the task has not succeeded, 410 when the object is gone from storage.",
                "tags": ["tasks"],
                "parameters": [TASK_ID_PARAMETER, OUTPUT_NAME_PARAMETER],
                "responses": {
                    "200": {
                        "description": "The content, with the output's Content-Type.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "304": {"description": "Not modified (If-None-Match)."},
                    "410": _error("The output's object is gone from storage."),
                    **_errors("400", "401", "404", "409", "503"),
                },
            }
        },
        "/uploads": {
            "post": {
                "summary": "Store a file under uploads/ for a task to read",
                "tags": ["uploads"],
                "parameters": [
                    {
                        "name": "overwrite",
                        "in": "query",
                        "required": False,
                        "description": "true (or 1, yes, on) replaces an existing object; "
                        "anything else answers 409 when the name exists.",
                        "schema": {"type": "string", "examples": ["true"]},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    # No "type": a form field is text on the wire
                                    # whatever a generator meant it to be.
                                    "name": {
                                        "description": "Object name under uploads/ "
                                        "(default: the file's own name, made safe).",
                                        "maxLength": MAX_OBJECT_NAME_BYTES,
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "Stored.", "content": _json(_ref("UploadStored"))},
                    **_errors("400", "401", "403", "409", "413", "415", "503"),
                },
            }
        },
        "/task-types": _open_get(
            "The registered task types and their JSON Schemas", "TaskTypeList"
        ),
        "/health": _open_get("Liveness: the process serves requests", "Health", tag="health"),
        "/ready": _open_get("Readiness: the task topic is reachable", "Ready", tag="health"),
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}
                },
            }
        },
        "/docs": {
            "get": {
                "summary": "This document as a page",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    paths["/ready"]["get"]["responses"].update(_errors("503"))
    if file_model is not None:
        paths["/submit-file-task"] = {
            "post": _submit_operation(
                "The recipe's file task (defaults: sample.txt, 2 s)",
                _ref("FileProcessingFields"),
                required=False,
            )
        }
    if data_model is not None:
        paths["/submit-data-task"] = {
            "post": _submit_operation(
                "The recipe's data task (defaults: 100 records, normalize)",
                _ref("DataTransformationFields"),
                required=False,
            )
        }
    return paths


def _open_get(summary: str, model: str, tag: str = "meta") -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "security": [],
            "responses": {"200": {"description": "OK", "content": _json(_ref(model))}},
        }
    }


def openapi_document(registry: TaskRegistry, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API, for this registry and configuration."""
    models = task_request_models(registry)
    payloads = {t.name: t.payload_model for t in registry}
    entries = [(m, "validation") for m in models.values()]
    entries += [(m, "serialization") for m in RESPONSE_MODELS]
    admin = bool(settings.admin_api_keys)
    if admin:
        entries += [(m, "serialization") for m in ADMIN_RESPONSE_MODELS]
    # The shortcut routes take the payload fields without task_type.
    shortcut_payloads = {
        "FileProcessingFields": payloads.get("file_processing"),
        "DataTransformationFields": payloads.get("data_transformation"),
    }
    entries += [(m, "validation") for m in shortcut_payloads.values() if m is not None]
    keyed, top = models_json_schema(entries, ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    for alias, model in shortcut_payloads.items():
        if model is not None:
            schemas[alias] = keyed[(model, "validation")]
    schemas["SubmitTaskRequest"] = {
        "description": "A task: task_type selects the type; the other fields are its payload.",
        "oneOf": [_ref(model.__name__) for model in models.values()],
        "discriminator": {
            "propertyName": "task_type",
            "mapping": {name: REF.format(model=model.__name__) for name, model in models.items()},
        },
    }
    schemas["BatchRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["tasks"],
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_TASKS,
                # Deliberately open: each item is judged on its own (a SubmitTaskRequest is
                # queued, anything else comes back `rejected`), never the batch as a whole.
                "items": {
                    "description": "A task as for POST /submit-task (SubmitTaskRequest). "
                    "An invalid item is `rejected` in the results; the others are queued.",
                    "examples": [{"task_type": "file_processing", "filename": "report.csv"}],
                },
            }
        },
    }
    paths = _paths(models)
    paths.update(internal_paths(_errors, guarded=bool(settings.scheduler_service_account)))
    schemas.update(internal_schemas())
    if admin:
        paths.update(admin_paths(_errors))
        schemas.update(admin_schemas())
    submit_security: list[dict[str, list]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    if not settings.api_keys:
        submit_security.append({})  # keys are optional while API_KEYS is empty
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Task pipeline API",
            "version": "1",
            "description": "Submit background tasks to Pub/Sub and follow their status. "
            "In production the service is private (Cloud Run IAM, no public invoker); "
            "API keys are a second gate. Any request not received in full within "
            "REQUEST_READ_TIMEOUT_SECONDS is answered 408 and closed; a body larger than "
            "every route accepts, 413. Every response carries X-Content-Type-Options: nosniff.",
        },
        "security": submit_security,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <one of API_KEYS>",
                },
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "googleIdToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A Google-signed ID token (Cloud Scheduler's OIDC token).",
                },
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "Repeat a request with the same key and body to get the "
                    "same task back without queueing it again (kept for at least a day).",
                    "schema": {"type": "string", "pattern": KEY_PATTERN},
                }
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
        },
    }
