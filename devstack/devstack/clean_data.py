"""`make clean-data`: wipe what `make run` keeps across restarts, unless it is running.

Removes DATA_DIR/data (the emulators' topics, subscriptions, messages and objects) and
DATA_DIR/logs; the next `make run` starts from an empty bucket and bootstraps again.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from devstack.state import DATA_DIR, DATA_DIR_ENV, read_state, state_path


def clean_data(data_dir: Path) -> list[Path]:
    """Remove the stack's data and logs; the folders removed. RuntimeError while it runs."""
    running = read_state(state_path(data_dir))
    if running is not None and running.alive():
        raise RuntimeError(
            f"the local stack is running (pid {running.pid}, API at {running.api_url}): "
            "stop it (Ctrl+C) before wiping its data"
        )
    removed = []
    for folder in (data_dir / "data", data_dir / "logs"):
        if folder.exists():
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def main() -> int:
    data_dir = Path(os.environ.get(DATA_DIR_ENV) or DATA_DIR)
    try:
        removed = clean_data(data_dir)
    except RuntimeError as exc:
        print(f"clean-data: {exc}", file=sys.stderr)
        return 1
    print(
        "removed " + ", ".join(map(str, removed)) if removed else f"nothing to remove in {data_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
