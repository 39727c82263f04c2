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
from taskcore.events import EVENT_FIELDS, Event
from taskcore.logs import configure_logging
from taskcore.settings import Settings
from taskcore.tasks import load_task_modules

log = logging.getLogger(__name__)


class ExitCode(enum.IntEnum):
    """How a worker execution ends."""

    OK = 0
    INFRASTRUCTURE_UNAVAILABLE = 2
    BAD_CONFIGURATION = 3


def summary_fields(fields: dict) -> dict:
    """The summary line's fields; an idle execution's only those its event always carries.

    An idle execution runs every few minutes, and every other count of it is 0: its line
    stays short. An execution that received anything reports every count.
    """
    if fields["received"]:
        return fields
    kept = EVENT_FIELDS[Event.EXECUTION_SUMMARY] | {"event"}
    return {k: v for k, v in fields.items() if k in kept}


def summary_message(fields: dict) -> str:
    """What the execution did, in a few words."""
    if not fields["received"]:
        return f"execution done: no tasks ({fields['stop_reason']} after {fields['duration_seconds']:g}s)"
    return (
        f"execution done: {fields['processed']} processed, {fields['failed']} failed, "
        f"{fields['dead_lettered']} dead-lettered ({fields['stop_reason']})"
    )


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
    fields = summary_fields(summary.as_fields())
    log.info(summary_message(fields), extra={"json_fields": fields})
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
