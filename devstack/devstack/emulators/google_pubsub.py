"""Google's Pub/Sub emulator (gcloud's pubsub-emulator component, which needs Java)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_LAUNCHER = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
_KNOWN_SDK_ROOTS = (
    "/usr/lib/google-cloud-sdk",
    "/usr/share/google-cloud-sdk",
    "/opt/google-cloud-sdk",
    "/google-cloud-sdk",
    os.path.expanduser("~/google-cloud-sdk"),
)


def find_google_pubsub_emulator() -> str | None:
    """Path of Google's emulator launcher, or None when it (or Java) is not installed."""
    if shutil.which("java") is None:
        return None
    roots = list(_KNOWN_SDK_ROOTS)
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.insert(0, os.environ["CLOUDSDK_ROOT_DIR"])
    gcloud = shutil.which("gcloud")
    if gcloud:
        # gcloud is usually <root>/bin/gcloud, possibly behind a symlink.
        roots.insert(0, str(Path(os.path.realpath(gcloud)).parent.parent))
    for root in roots:
        launcher = Path(root) / _LAUNCHER
        if launcher.is_file():
            return str(launcher)
    if gcloud:
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None
        launcher = Path(out) / _LAUNCHER
        if out and launcher.is_file():
            return str(launcher)
    return None


def google_pubsub_argv(launcher: str, host: str, port: int) -> list[str]:
    """The command line that starts Google's emulator on host:port."""
    return [launcher, f"--host={host}", f"--port={port}"]
