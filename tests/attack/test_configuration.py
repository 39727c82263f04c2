"""Key lists that name no key, or a key in both lists, stop the API before it serves.

The attack: `API_KEYS=' , '` (a template left half-filled, a secret of commas) parsed to no
key, and no key means an open API, so the process came up open and said nothing. Now
such a value is a configuration error: `taskctl api` exits 3 naming the variable, and
create_app refuses to build. A key in both API_KEYS and ADMIN_API_KEYS (every submitting
client an operator) is refused the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from devstack.emulators import free_port
from task_api import create_app
from taskcore.errors import ConfigurationError

EXIT_CONFIGURATION = 3

BAD_KEYS = [
    pytest.param({"API_KEYS": " , "}, "API_KEYS", id="submit-keys-only-commas"),
    pytest.param({"API_KEYS": "   "}, "API_KEYS", id="submit-keys-only-spaces"),
    pytest.param({"ADMIN_API_KEYS": ",,"}, "ADMIN_API_KEYS", id="admin-keys-only-commas"),
    pytest.param(
        {"API_KEYS": "k1,shared", "ADMIN_API_KEYS": "shared"},
        "both API_KEYS and ADMIN_API_KEYS",
        id="key-in-both-lists",
    ),
]


@pytest.mark.parametrize("environ, named", BAD_KEYS)
def test_taskctl_api_exits_3_naming_the_variable(environ, named):
    port = free_port()
    env = {**os.environ, **environ, "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskctl", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # it served: the attack worked; stop it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert proc.returncode == EXIT_CONFIGURATION, stderr.decode()[-2000:]
    assert named in stderr.decode()
    assert "Traceback" not in stderr.decode()


@pytest.mark.parametrize("environ, named", BAD_KEYS)
def test_create_app_refuses_to_build(monkeypatch, environ, named):
    for name in ("API_KEYS", "ADMIN_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError, match=named):
        create_app()
