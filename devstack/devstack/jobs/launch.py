"""Starting one task process: in a process group of its own, dying with the stand-in.

On Linux the task asks the kernel for SIGKILL when its parent goes (PR_SET_PDEATHSIG), so a
stand-in killed outright leaves no task behind. That request has to be made in the child
before it execs the task; a preexec_fn would do it, but it forces fork(), whose child runs
gRPC's fork handlers, and those crash it at times (SIGABRT, "epoll_wait error: Bad file
descriptor"). So the child is started without any Python hook (vfork, no handlers run) as
a tiny launcher that makes the request and execs the task in its own place: same pid,
same process group, the same environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

# argv: [parent pid, program, args...]. The parent check closes the race in which the
# stand-in died before the request was made.
_LAUNCHER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write(f"could not start {sys.argv[2]!r}: {exc}\\n")
    os._exit(127)
"""
_DIE_WITH_PARENT = sys.platform.startswith("linux")


def spawn_task(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
    """Start argv with env, output piped, as the leader of a new process group.

    Raises OSError (as Popen would) when the program cannot be found or run.
    """
    program = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if program is None:
        raise FileNotFoundError(2, "No such file or directory (or not executable)", argv[0])
    launch = list(argv)
    if _DIE_WITH_PARENT:
        launch = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), *argv]
    return subprocess.Popen(
        launch,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )
