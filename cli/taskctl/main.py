"""taskctl: bootstrap resources, serve the API, run a worker execution, submit tasks, run locally,
and browse, replay or purge dead letters (`taskctl dlq`).

Every option also reads an environment variable (shown in --help); settings themselves
come from the environment through taskcore.settings.
"""

from __future__ import annotations

import sys

import click

from taskcore.errors import TaskPipelineError
from taskcore.settings import Settings
from taskctl.dlq import dlq
from taskctl.queues import queues
from taskctl.schedules import dispatch, schedules
from taskctl.tasks import submit, tasks


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except TaskPipelineError as exc:
        raise click.ClickException(str(exc)) from None


# Commands that never touch a task type, so a broken task module does not stop them.
_NO_TASK_MODULES = frozenset({"emulator", "settings", "tasks", "submit", "dev"})
# Commands that start their own emulators rather than use a running local stack.
_OWN_STACK = frozenset({"dev", "emulator"})


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Operate the Pub/Sub task pipeline.

    Run from a checkout where `make run` is running, every command uses that local stack
    (found in .local/stack.json) unless an emulator or another project is set explicitly.
    """
    if ctx.resilient_parsing:
        return
    if ctx.invoked_subcommand not in _OWN_STACK:
        from taskctl.local import use_running_local_stack

        use_running_local_stack()
    if ctx.invoked_subcommand in _NO_TASK_MODULES:
        return
    from taskcore.errors import ConfigurationError
    from taskcore.tasks import load_task_modules

    try:
        load_task_modules(Settings.from_env().task_modules)
    except ConfigurationError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(3)


@main.command()
def bootstrap() -> None:
    """Create the topic, subscriptions (with dead-letter policy), DLQ and bucket if missing."""
    from taskcore.bootstrap import bootstrap as run_bootstrap
    from taskcore.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level)
    report = run_bootstrap(settings)
    for name in report.created:
        click.echo(f"created  {name}", err=True)
    for name in report.existing:
        click.echo(f"exists   {name}", err=True)


@main.command()
@click.option("--host", envvar="HOST", default="0.0.0.0", help="Interface to bind.")
@click.option("--port", envvar="PORT", type=int, default=None, help="Port (default: PORT setting).")
@click.option(
    "--fd", type=int, default=None, help="Serve on this inherited listening socket instead."
)
def api(host: str, port: int | None, fd: int | None) -> None:
    """Serve the submit API with gunicorn (threads, --timeout 0)."""
    from task_api.server import serve

    settings = _settings()
    serve(settings, host=host, port=port or settings.port, fd=fd)


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's settings table.")
def show_settings(markdown: bool) -> None:
    """Show the settings this process would use (secrets hidden), or the settings table."""
    from taskcore.settings import settings_table_markdown

    if markdown:
        click.echo(settings_table_markdown())
        return
    settings = _settings()
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if field.alias.endswith("_KEYS"):
            value = f"({len(value)} keys)"
        click.echo(f"{field.alias}={value}")


@main.command()
@click.option(
    "--queue",
    default=None,
    help="The queue to drain (default: the QUEUE setting, `default`).",
)
def worker(queue: str | None) -> None:
    """Run one worker execution: drain one queue's subscription, then exit."""
    import os

    from background_worker.execution import run_execution

    if queue:
        os.environ["QUEUE"] = queue  # read, like every setting, through taskcore.settings
    sys.exit(run_execution())


@main.command()
@click.option("--port", envvar="PORT", type=int, default=8080, help="API port.")
@click.option(
    "--safety-net-seconds",
    envvar="SAFETY_NET_SECONDS",
    type=click.FloatRange(min=60),
    default=600.0,
    help="Seconds between the safety-net runs of each queue's job (first one after as long), "
    "the local stand-in for Terraform's scheduled run; executions otherwise start on demand.",
)
@click.option(
    "--data-dir",
    envvar="TASKCTL_DATA_DIR",
    default=".local",
    help="Where the stack keeps emulator data, logs and its address (stack.json).",
)
@click.option(
    "--persist/--in-memory",
    default=True,
    help="Keep topics, messages and objects across restarts (in DATA_DIR/data).",
)
def dev(port: int, safety_net_seconds: float, data_dir: str, persist: bool) -> None:
    """Run the whole stack locally: emulators, bootstrap, the API, and worker executions
    started on demand through a local Cloud Run Jobs stand-in."""
    from taskctl.local import local_stack_missing

    missing = local_stack_missing()
    if missing:
        raise click.ClickException(missing)
    from devstack.stack import run_dev_stack
    from taskcore.errors import EmulatorError

    try:
        code = run_dev_stack(
            port=port,
            data_dir=data_dir,
            persist=persist,
            safety_net_seconds=safety_net_seconds,
        )
    except EmulatorError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.group()
def emulator() -> None:
    """Run a local emulator in the foreground."""


@emulator.command("gcs")
@click.option("--host", envvar="GCS_EMULATOR_HOST_BIND", default="127.0.0.1")
@click.option("--port", envvar="GCS_EMULATOR_PORT", type=int, default=9023)
@click.option(
    "--data-dir",
    envvar="GCS_EMULATOR_DATA_DIR",
    default=None,
    help="Persist here (default: memory).",
)
def emulator_gcs(host: str, port: int, data_dir: str | None) -> None:
    """The local GCS emulator (gcp-storage-emulator with create-only preconditions enforced)."""
    import os

    argv = [sys.executable, "-m", "devstack.emulators.gcs", "--host", host, "--port", str(port)]
    os.execv(sys.executable, argv + (["--data-dir", data_dir] if data_dir else []))


def _mount_pubsub_emulator() -> None:
    # The pure-Python Pub/Sub emulator ships its own click command.
    try:
        from devstack.emulators.pubsub.cli import pubsub_command
    except ImportError:
        return
    emulator.add_command(pubsub_command, "pubsub")


_mount_pubsub_emulator()
main.add_command(dlq)
main.add_command(tasks)
main.add_command(submit)
main.add_command(schedules)
main.add_command(dispatch)
main.add_command(queues)

if __name__ == "__main__":
    main()
