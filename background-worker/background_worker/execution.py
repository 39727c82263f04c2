"""The Cloud Run Job entry point: one execution, structured logs, signals and exit codes.

Exit codes are for infrastructure only. A task's failure is that message's business
(retried or dead-lettered); were it to fail the execution, Cloud Run would retry the
whole task and redo everything else.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
import threading

from taskcore.errors import ConfigurationError, InfrastructureError
from taskcore.events import Event
from taskcore.logs import configure_logging
from taskcore.settings import Settings
from taskcore.tasks import load_task_modules

log = logging.getLogger(__name__)


class ExitCode(enum.IntEnum):
    """How a worker execution ends."""

    OK = 0
    INFRASTRUCTURE_UNAVAILABLE = 2
    BAD_CONFIGURATION = 3


def install_shutdown_handlers(shutdown: threading.Event) -> None:
    """SIGTERM (Cloud Run's stop) and SIGINT request a graceful shutdown."""

    def _handle(signum, _frame):
        log.warning(
            "received %s: no more pulls; finishing in-flight work", signal.Signals(signum).name
        )
        shutdown.set()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def run_execution(settings: Settings | None = None) -> ExitCode:
    """Run one worker execution and return its exit code."""
    from background_worker.worker import drain_subscription

    try:
        settings = settings or Settings.from_env()
        configure_logging(settings.log_level, fixed_fields=settings.execution_labels())
        task_types = load_task_modules(settings.task_modules)
    except ConfigurationError as exc:
        configure_logging()
        log.error("%s", exc, extra={"json_fields": {"event": Event.EXECUTION_FAILED}})
        return ExitCode.BAD_CONFIGURATION
    shutdown = threading.Event()
    install_shutdown_handlers(shutdown)
    try:
        summary = drain_subscription(settings, shutdown=shutdown, task_types=task_types)
    except InfrastructureError as exc:
        log.error(
            "execution failed: %s", exc, extra={"json_fields": {"event": Event.EXECUTION_FAILED}}
        )
        return ExitCode.INFRASTRUCTURE_UNAVAILABLE
    fields = summary.as_fields()
    log.info(
        "execution done: %d processed, %d failed, %d dead-lettered",
        fields["processed"],
        fields["failed"],
        fields["dead_lettered"],
        extra={"json_fields": fields},
    )
    if summary.abandoned:
        # Threads still stuck in a handler must not hold the process past Cloud Run's
        # grace period; their messages were nacked and writes after cancel are refused.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(ExitCode.OK)
    return ExitCode.OK


def main() -> None:
    """Console entry: run one execution and exit with its code."""
    sys.exit(run_execution())
