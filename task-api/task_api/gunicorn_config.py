"""gunicorn config for Cloud Run: `gunicorn --config python:task_api.gunicorn_config 'task_api:create_app()'`.

gunicorn reads this module's top-level names; they come from the same function `serve()`
uses, so the command line and `taskctl api` cannot drift apart. PORT, API_WORKERS,
API_THREADS and LOG_LEVEL are read through Settings.
"""

from __future__ import annotations

from task_api.server import gunicorn_options
from taskcore.settings import Settings

globals().update(gunicorn_options(Settings.from_env()))
