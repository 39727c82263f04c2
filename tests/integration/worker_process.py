"""Running one worker execution as the Cloud Run job does (`python -m taskctl worker`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from taskcore.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def run_worker_execution(settings: Settings, log_path: Path) -> subprocess.CompletedProcess:
    """Run one execution with these settings to its end; its output is also kept in log_path.

    A worker that hangs is killed after two minutes (subprocess.run's timeout kills it).
    """
    run = subprocess.run(
        [sys.executable, "-m", "taskctl", "worker"],
        env={**os.environ, **settings.as_environ(), "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    log_path.write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout + run.stderr
    return run
