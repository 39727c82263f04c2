"""The worker image, as a local process: which argv a task runs and the environment it gets.

The container image a job names is ignored. Its part is played by this interpreter with the
project installed, shaped like background-worker/Dockerfile: no ENTRYPOINT, CMD
`taskctl worker`, ENV PYTHONUNBUFFERED=1. So, as on Cloud Run, a container's `command`
replaces the (empty) entrypoint and its `args` replace the CMD; `taskctl` and `python` at
the head of the result are this interpreter's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

IMAGE_CMD = ("taskctl", "worker")
IMAGE_ENV = {"PYTHONUNBUFFERED": "1"}
_PYTHON_NAMES = frozenset({"python", "python3", f"python3.{sys.version_info.minor}"})


def task_argv(command: Sequence[str], args: Sequence[str]) -> list[str]:
    """The argv a task with this container command and args runs."""
    if command:
        argv = [*command, *args]
    elif args:
        argv = list(args)
    else:
        argv = list(IMAGE_CMD)
    head, rest = argv[0], argv[1:]
    if head == "taskctl":
        return [sys.executable, "-m", "taskctl", *rest]
    if head in _PYTHON_NAMES:
        return [sys.executable, *rest]
    return argv


def task_env(job_env: Mapping[str, str], cloud_run: Mapping[str, str]) -> dict[str, str]:
    """The stand-in's own environment (emulator hosts), under the image's, under the job's
    (overrides merged in), under the variables Cloud Run sets for each task."""
    return {**os.environ, **IMAGE_ENV, **job_env, **cloud_run}
