"""Running the API under gunicorn, configured for Cloud Run.

`gunicorn_options(settings)` is the one source of the server's configuration: both
`gunicorn_config.py` (for the plain gunicorn command line) and `serve()` use it.
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

from gunicorn.app.base import BaseApplication

from task_api.buffered_worker import worker_class
from task_api.request_body import largest_request_body
from taskcore.logs import configure_logging
from taskcore.settings import Settings
from taskcore.tasks import TaskRegistry, load_task_modules

# Cloud Run gives a stopping instance 10 s after SIGTERM; finish in-flight requests before that.
GRACEFUL_TIMEOUT_SECONDS = 8


def gunicorn_options(
    settings: Settings, host: str = "0.0.0.0", port: int | None = None, fd: int | None = None
) -> dict[str, Any]:
    """gunicorn settings for the API: buffering gthread workers, no worker timeout, no access log.

    fd: an inherited socket that already listens (the local stack binds the port itself).
    """

    def on_starting(server) -> None:
        # In the master before forking, so every worker inherits the JSON log handler.
        configure_logging(
            settings.log_level, {"service": "task-api"}, project_id=settings.project_id
        )

    def post_worker_init(worker) -> None:
        # The app and the Google client libraries are loaded by now and live as long as the
        # worker: freezing them keeps full collections to request garbage. Unfrozen, a full
        # collection scans them all and stalls every request thread for ~150 ms.
        gc.freeze()

    def worker_exit(server, worker) -> None:
        # In the worker, after its last request: flush the transition journal and the
        # publisher, within the graceful timeout.
        from task_api import close_app

        app = getattr(worker, "wsgi", None)
        if app is not None and hasattr(app, "extensions"):
            close_app(app)

    return {
        "bind": f"fd://{fd}" if fd is not None else f"{host}:{port or settings.port}",
        # gthread whose threads only take requests that arrived in full (slow clients wait
        # in the event loop, and get 408 past REQUEST_READ_TIMEOUT_SECONDS).
        "worker_class": worker_class(
            settings.request_read_timeout_seconds, largest_request_body(settings)
        ),
        "workers": settings.api_workers,
        "threads": settings.api_threads,
        # Cloud Run enforces the request timeout; gunicorn killing a busy worker would only
        # drop the other requests it was serving.
        "timeout": 0,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        # Cloud Run already writes a request log per request; a second one costs throughput.
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        # The control socket defaults to a fixed path under $HOME: two servers on one machine
        # (tests, `taskctl dev`) would fight over it, and Cloud Run has no use for it.
        "control_socket_disable": True,
        "on_starting": on_starting,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
    }


class _ApiServer(BaseApplication):
    """gunicorn running create_app(settings) with gunicorn_options(settings)."""

    def __init__(self, settings: Settings, registry: TaskRegistry, options: dict[str, Any]) -> None:
        self._settings = settings
        self._registry = registry
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        from task_api import create_app

        return create_app(self._settings, registry=self._registry)


def serve(
    settings: Settings | None = None,
    host: str = "0.0.0.0",
    port: int | None = None,
    fd: int | None = None,
) -> None:
    """Run the API under gunicorn on host:port (default: $PORT) until it is stopped.

    TASK_MODULES are imported here, before gunicorn starts: a module that cannot be imported
    raises TaskModuleError instead of every worker process failing to boot.
    """
    settings = settings or Settings.from_env()
    registry = load_task_modules(settings.task_modules)
    _ApiServer(settings, registry, gunicorn_options(settings, host, port, fd)).run()


def main(argv: list[str] | None = None) -> None:
    """`python -m task_api.server [--host H] [--port P]`, settings from the environment."""
    parser = argparse.ArgumentParser(prog="python -m task_api.server", description=main.__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    serve(Settings.from_env(), args.host, args.port)


if __name__ == "__main__":
    main()
