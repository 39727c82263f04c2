"""Shared fixtures: the real emulators on free ports, per-test resource names, and clean-up.

Integration tests run against Google's Pub/Sub emulator where it is installed (the
pure-Python one otherwise; TASKCTL_PUBSUB_EMULATOR forces either) and against our
patched GCS emulator. Each emulator is started once per session and always stopped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from devstack.emulators.process import temporary_environ
from taskcore.settings import Settings

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep logs and screenshots worth looking at after a failure."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def running_emulator(start, log_path: Path):
    """Start an emulator, point its environment variable at it, and undo both at the end."""
    with start(log_path=str(log_path)) as emulator, temporary_environ(emulator.env):
        yield emulator


@pytest.fixture(scope="session")
def pubsub_emulator(artifacts_dir):
    """A Pub/Sub emulator for the whole session; PUBSUB_EMULATOR_HOST points at it."""
    from devstack.emulators import start_pubsub_emulator

    with running_emulator(start_pubsub_emulator, artifacts_dir / "pubsub-emulator.log") as em:
        yield em


@pytest.fixture(scope="session")
def gcs_emulator(artifacts_dir):
    """The patched GCS emulator for the whole session; STORAGE_EMULATOR_HOST points at it."""
    from devstack.emulators import start_gcs_emulator

    with running_emulator(start_gcs_emulator, artifacts_dir / "gcs-emulator.log") as em:
        yield em


def make_test_settings(**overrides) -> Settings:
    """Settings with names unique to one test and waits shortened for tests."""
    suffix = uuid.uuid4().hex[:10]
    values = dict(
        project_id="test-project",
        topic_name=f"tasks-{suffix}",
        subscription_name=f"tasks-{suffix}-worker",
        dlq_topic_name=f"tasks-{suffix}-dlq",
        dlq_subscription_name=f"tasks-{suffix}-dlq-sub",
        bucket_name=f"bucket-{suffix}",
        ack_deadline_seconds=10,
        retry_min_backoff_seconds=0.1,
        retry_max_backoff_seconds=0.5,
        idle_timeout_seconds=1.5,
        # A run's claim on its task: renewed every 5/3 s, so a dead run's claim lapses fast.
        claim_seconds=5,
        worker_concurrency=8,
        pubsub_emulator_host=os.environ.get("PUBSUB_EMULATOR_HOST"),
        monitoring_emulator_host=os.environ.get("MONITORING_EMULATOR_HOST"),
        storage_emulator_host=os.environ.get("STORAGE_EMULATOR_HOST"),
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(pubsub_emulator, gcs_emulator) -> Settings:
    """Fresh, unique settings on the running emulators (resources not yet created)."""
    return make_test_settings()


@pytest.fixture
def pipeline(settings):
    """Settings whose topics, subscriptions and bucket exist (bootstrapped)."""
    from taskcore.bootstrap import bootstrap
    from taskcore.clients import bucket

    bootstrap(settings)
    # The recipe's default input: a file task that names no file reads uploads/sample.txt.
    bucket(settings).blob("uploads/sample.txt").upload_from_string(b"sample\n", "text/plain")
    return settings
