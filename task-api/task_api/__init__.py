"""task_api: the HTTP front door that validates tasks and publishes them to Pub/Sub.

`create_app()` is the application factory, also usable by gunicorn:
`gunicorn --config python:task_api.gunicorn_config 'task_api:create_app()'`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from task_api import cross_site
from task_api.errors import register_error_handlers
from task_api.routes import admin, batches, health, internal, meta, outputs, status, tasks, uploads
from task_api.services import EXTENSION_KEY, ApiServices, LazyClients
from taskcore.settings import Settings
from taskcore.tasks import TaskRegistry, load_task_modules


def create_app(
    settings: Settings | None = None,
    *,
    publisher: Any = None,
    storage: Any = None,
    registry: TaskRegistry | None = None,
) -> Flask:
    """Build the API for TASK_MODULES' task types (or `registry`'s).

    publisher and storage replace the real clients (tests inject fakes). A task module that
    cannot be imported raises TaskModuleError here, before anything is served.
    """
    settings = settings or Settings.from_env()
    if registry is None:
        registry = load_task_modules(settings.task_modules)
    app = Flask(__name__)
    # Keep keys in the order the handlers wrote them, and skip the sort on the hot path.
    app.json.sort_keys = False
    # Werkzeug refuses bodies over this (413) before reading them, chunked ones included;
    # POST /uploads raises it for its own request to MAX_UPLOAD_BYTES.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions[EXTENSION_KEY] = ApiServices.build(
        settings,
        registry,
        LazyClients(settings, publisher=publisher, storage=storage),
    )
    register_error_handlers(app)
    cross_site.install(app)
    app.url_map.converters.update(admin.CONVERTERS)
    for blueprint in (
        health.bp,
        tasks.bp,
        batches.bp,
        status.bp,
        outputs.bp,
        uploads.bp,
        meta.bp,
        internal.bp,
    ):
        app.register_blueprint(blueprint)
    app.register_blueprint(admin.bp)  # /admin: dead letters, tasks, dashboard
    return app


def close_app(app: Flask) -> None:
    """Stop the record writers and the dispatcher, flush the journal and the publisher
    (gunicorn's worker_exit calls this)."""
    app.extensions[EXTENSION_KEY].close()


__all__ = ["close_app", "create_app"]
