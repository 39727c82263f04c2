"""Where a running local stack can be found: `.local/stack.json` in the checkout.

`taskctl dev` (`make run`) writes it once the API answers, and removes it when it stops; the
emulators sit on free ports, so this file is how `taskctl dlq list` and friends, run from
the same checkout, find them with nothing exported. A file whose process is gone (a stack
killed with SIGKILL) is ignored. It holds addresses and paths, never a key.

Only the standard library here: taskctl reads it wherever devstack is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "stack.json"
DATA_DIR = ".local"
# What `taskctl dev --data-dir` defaults to, and what taskctl looks for (both read it).
DATA_DIR_ENV = "TASKCTL_DATA_DIR"


@dataclass(frozen=True)
class StackState:
    """A running local stack: who runs it, where its API and emulators answer."""

    pid: int
    api_url: str
    project_id: str
    # The variables that point clients at its emulators (PUBSUB_EMULATOR_HOST, ...).
    env: dict[str, str] = field(default_factory=dict)
    data_dir: str = ""
    api_log: str = ""
    admin_key_file: str | None = None

    def alive(self) -> bool:
        """Whether the process that wrote it still runs (and is still a taskctl)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, though not ours
        # After a reboot the pid may belong to anything: where /proc tells, check it is ours.
        cmdline = Path(f"/proc/{self.pid}/cmdline")
        try:
            return b"taskctl" in cmdline.read_bytes()
        except FileNotFoundError:
            return not Path("/proc/self").exists()  # no /proc (macOS): trust the pid
        except OSError:
            return True


def state_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / STATE_FILE


def write_state(data_dir: str | os.PathLike, state: StackState) -> Path:
    """Write the state file atomically (a reader never sees half of it)."""
    path = state_path(data_dir)
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove_state(data_dir: str | os.PathLike, pid: int) -> None:
    """Remove the state file if it is this process's (a newer stack's stays)."""
    state = read_state(state_path(data_dir))
    if state is not None and state.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            state_path(data_dir).unlink()


def read_state(path: Path) -> StackState | None:
    """The state in path, or None if there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text())
        return StackState(**data)
    except (OSError, ValueError, TypeError):
        return None


def find_running_stack(start: Path | None = None) -> StackState | None:
    """The live stack of TASKCTL_DATA_DIR, else of the nearest `.local/` from start upwards."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        candidates = [state_path(explicit)]
    else:
        here = (start or Path.cwd()).resolve()
        candidates = [state_path(folder / DATA_DIR) for folder in (here, *here.parents)]
    for path in candidates:
        state = read_state(path)
        if state is not None:
            return state if state.alive() else None
    return None
