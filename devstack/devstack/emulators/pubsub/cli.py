"""Command line: run the emulator in the foreground until SIGTERM or Ctrl+C."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from devstack.emulators.pubsub.broker import Broker
from devstack.emulators.pubsub.monitoring import MonitoringServer
from devstack.emulators.pubsub.persistence import Snapshotter
from devstack.emulators.pubsub.server import build_server

log = logging.getLogger(__name__)


def serve(
    host: str, port: int, data_dir: str | None = None, monitoring_port: int | None = None
) -> None:
    """Serve on host:port until SIGTERM or SIGINT, then save state (with data_dir) and stop.

    With monitoring_port, subscriptions' backlog is served as Cloud Monitoring serves it.
    """
    broker = Broker()
    snapshots = Snapshotter(broker, data_dir) if data_dir else None
    if snapshots is not None:
        snapshots.load()
    server, bound = build_server(broker, host, port)
    if not bound:
        raise click.ClickException(f"could not listen on {host}:{port}")
    monitoring = None
    if monitoring_port is not None:
        try:
            monitoring = MonitoringServer(broker, host, monitoring_port)
        except OSError as exc:
            raise click.ClickException(
                f"could not listen on {host}:{monitoring_port}: {exc}"
            ) from None
    stop = threading.Event()
    ticker = threading.Thread(target=broker.run_ticker, args=(stop,), daemon=True)
    ticker.start()
    server.start()
    if monitoring is not None:
        monitoring.start()
    if snapshots is not None:
        snapshots.start()

    def on_signal(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"PUBSUB_EMULATOR_HOST={host}:{bound}")
    if monitoring is not None:
        click.echo(f"MONITORING_EMULATOR_HOST={host}:{monitoring.port}")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        broker.stop()
        if monitoring is not None:
            monitoring.stop()
        server.stop(grace=1).wait()
        if snapshots is not None:
            snapshots.stop()
        click.echo("Pub/Sub emulator stopped")


@click.command(name="pubsub")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="PUBSUB_EMULATOR_HOST_BIND",
    help="Address to listen on.",
)
@click.option(
    "--port",
    default=8085,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="PUBSUB_EMULATOR_PORT",
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--data-dir",
    default=None,
    envvar="PUBSUB_EMULATOR_DATA_DIR",
    type=click.Path(file_okay=False),
    help="Keep topics, subscriptions, snapshots, IAM policies and unacked messages here.",
)
@click.option(
    "--monitoring-port",
    default=None,
    type=click.IntRange(0, 65535),
    envvar="MONITORING_EMULATOR_PORT",
    help="Also serve subscriptions' backlog as Cloud Monitoring's timeSeries.list here "
    "(0: any free port).",
)
def pubsub_command(host: str, port: int, data_dir: str | None, monitoring_port: int | None) -> None:
    """Run the pure-Python Pub/Sub emulator in the foreground."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        serve(host, port, data_dir, monitoring_port)
    except RuntimeError as exc:  # grpc raises it when the port cannot be bound
        raise click.ClickException(f"could not listen on {host}:{port}: {exc}") from exc
