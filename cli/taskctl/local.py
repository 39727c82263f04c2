"""taskctl and the local stack: find the one `make run` started, or say how to get one.

`make run` puts the emulators on free ports and writes where they are to .local/stack.json
(devstack.state). Any taskctl command run in that checkout (or with TASKCTL_DATA_DIR) then
talks to that stack with nothing exported, unless the environment already names an
emulator or another project: an explicit setting always wins.
"""

from __future__ import annotations

import importlib.util
import os

import click

# What the local stack needs besides this package (the `local` extra).
LOCAL_REQUIREMENTS = ("devstack", "gcp_storage_emulator")
INSTALL_HINT = (
    "the local stack needs the emulators, which this installation leaves out: "
    "pip install '.[local]' in a checkout (`make install` does)"
)
EMULATOR_VARIABLES = ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")


def local_stack_missing() -> str | None:
    """Why `taskctl dev` cannot run here, or None when it can."""
    for module in LOCAL_REQUIREMENTS:
        if importlib.util.find_spec(module) is None:
            return INSTALL_HINT
    return None


def use_running_local_stack() -> None:
    """Point this process at the running local stack, if there is one and nothing says not to."""
    if any(os.environ.get(name) for name in EMULATOR_VARIABLES):
        return
    try:
        from devstack.state import find_running_stack
    except ImportError:
        return  # no local stack in this installation (a production image)
    stack = find_running_stack()
    if stack is None:
        return
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if project and project != stack.project_id:
        return  # another project is named: that is what the operator means
    os.environ.update(stack.env)
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", stack.project_id)
    os.environ.setdefault("TASK_API_URL", stack.api_url)
    click.echo(f"taskctl: using the local stack of `make run` (API {stack.api_url})", err=True)
