"""Serving a Flask app in-process on a free loopback port, for clients that need a real URL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from werkzeug.serving import make_server

from devstack.emulators import free_port
from task_api import close_app, create_app
from taskcore.settings import Settings


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """The app served on 127.0.0.1 for the block (threaded); its base URL. Always stopped."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@contextlib.contextmanager
def served_api(settings: Settings) -> Iterator[str]:
    """create_app(settings) served for the block, then closed; its base URL."""
    app = create_app(settings)
    try:
        with served(app) as url:
            yield url
    finally:
        close_app(app)
