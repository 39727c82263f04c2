"""`pip install .` (no extras) gives an operator a working taskctl, and no emulators.

The project is copied as the Dockerfiles copy it and installed into a fresh venv (from
PyPI, through pip's cache): what an operator's machine or a production image gets.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "shared", "task-api", "background-worker", "cli",
           "example-tasks", "devstack", "chaos")  # fmt: skip


@pytest.fixture(scope="module")
def taskctl(tmp_path_factory) -> Path:
    """taskctl of a fresh venv with `pip install .` of a copy of the project."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
         "--quiet", str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    return venv / "bin" / "taskctl"


def run(taskctl: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(taskctl), *args], capture_output=True, text=True, timeout=60, cwd=taskctl.parent
    )


def test_taskctl_help_settings_and_dlq_help_work(taskctl):
    helped, settings, dlq = (
        run(taskctl, "--help"),
        run(taskctl, "settings"),
        run(taskctl, "dlq", "--help"),
    )

    assert helped.returncode == 0 and "dlq" in helped.stdout and "settings" in helped.stdout
    assert settings.returncode == 0 and "GOOGLE_CLOUD_PROJECT=local-project" in settings.stdout
    assert dlq.returncode == 0 and "replay" in dlq.stdout


def test_taskctl_dev_says_how_to_get_the_local_stack(taskctl):
    dev = run(taskctl, "dev")

    assert dev.returncode != 0
    assert "pip install '.[local]'" in dev.stderr
    assert "Traceback" not in dev.stderr


def test_the_emulators_and_dev_tools_are_not_installed(taskctl):
    python = taskctl.parent / "python"
    probe = "import importlib.util as u; print([m for m in ('gcp_storage_emulator', 'pytest', 'selenium') if u.find_spec(m)])"

    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)

    assert found.stdout.strip() == "[]", found.stdout + found.stderr
