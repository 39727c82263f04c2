"""Command line: serve in the foreground until SIGTERM or Ctrl+C, then stop every task."""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from devstack.jobs.defaults import CLOUD_RUN_TERM_GRACE, HOST_ENV
from devstack.jobs.server import build_server
from devstack.jobs.state import Store

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(host: str, port: int, work_dir: Path, term_grace: float = CLOUD_RUN_TERM_GRACE) -> None:
    """Serve on host:port until SIGTERM or SIGINT; stop every task process on the way out."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if not _is_loopback(host):
        log.warning(
            "listening on %s: anyone who can reach it can run commands as this user "
            "(CreateJob names the command); keep it on 127.0.0.1 outside a container",
            host,
        )
    store = Store(work_dir, term_grace=term_grace)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = None
    try:
        server, bound = build_server(store, host, port)
        if not bound:
            raise click.ClickException(f"could not listen on {host}:{port}")
        server.start()
        click.echo(f"{HOST_ENV}={host}:{bound}")
        click.echo(f"task logs under {work_dir}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        # Tasks first: once refused new executions, nothing can start a process any more.
        if not store.shutdown():
            log.error("some task processes outlived their SIGKILL")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop(grace=1).wait()
            click.echo("Cloud Run Jobs stand-in stopped")


@click.command(name="jobs")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port, printed at start).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where executions' logs go (default: a new temporary directory).",
)
@click.option(
    "--term-grace",
    type=click.FloatRange(min=0),
    default=CLOUD_RUN_TERM_GRACE,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL for a task past its timeout or cancelled.",
)
def jobs_command(host: str, port: int, work_dir: Path | None, term_grace: float) -> None:
    """Run the local stand-in for the Cloud Run Admin API v2 (jobs and executions)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if work_dir is None:
        work_dir = Path(tempfile.mkdtemp(prefix="cloud-run-jobs-"))
    try:
        serve(host, port, work_dir, term_grace)
    except RuntimeError as exc:  # grpc raises it when the port cannot be bound
        raise click.ClickException(f"could not listen on {host}:{port}: {exc}") from exc
