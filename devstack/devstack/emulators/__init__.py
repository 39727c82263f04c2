"""Local emulators for Pub/Sub and Cloud Storage, started as child processes.

`start_pubsub_emulator` picks Google's emulator where it is installed and the
pure-Python one otherwise (TASKCTL_PUBSUB_EMULATOR=google|python forces either).
`start_gcs_emulator` runs gcp-storage-emulator with this project's fixes.
`start_jobs_standin` runs the local stand-in for Cloud Run's jobs API (devstack.jobs).
Every handle stops its process (and the process group) on `stop()` or exit of a `with`.
"""

from __future__ import annotations

from devstack.emulators.process import EmulatorProcess, free_port, wait_for_http
from devstack.emulators.select import (
    JobsStandinProcess,
    start_gcs_emulator,
    start_jobs_standin,
    start_pubsub_emulator,
)

__all__ = [
    "EmulatorProcess",
    "JobsStandinProcess",
    "free_port",
    "start_gcs_emulator",
    "start_jobs_standin",
    "start_pubsub_emulator",
    "wait_for_http",
]
