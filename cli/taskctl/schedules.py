"""taskctl schedules: the periodic task types, for Terraform; taskctl dispatch: one tick.

`taskctl schedules export > infra/periodic.auto.tfvars.json` writes the `periodic_tasks`
variable Terraform turns into one Cloud Scheduler job per periodic type, so what runs on a
schedule is declared once, in code (`@task(schedule=..., timezone=...)`).
"""

from __future__ import annotations

import json

import click


def _registry():
    from taskcore.settings import Settings
    from taskcore.tasks import load_task_modules

    return load_task_modules(Settings.from_env().task_modules)


def periodic_entries(registry) -> list[dict]:
    """One entry per periodic task type, sorted by name."""
    return [
        {
            "task_type": task_type.name,
            "schedule": task_type.schedule,
            "timezone": task_type.timezone,
            "queue": task_type.queue,
        }
        for task_type in sorted(registry, key=lambda t: t.name)
        if task_type.schedule
    ]


@click.group()
def schedules() -> None:
    """The periodic task types (@task(schedule=...))."""


@schedules.command("export")
@click.option(
    "--tfvars/--list",
    default=True,
    help='{"periodic_tasks": [...]} for a .auto.tfvars.json, or the bare list.',
)
def export(tfvars: bool) -> None:
    """Print the periodic task types as JSON for Terraform's periodic_tasks variable."""
    entries = periodic_entries(_registry())
    click.echo(json.dumps({"periodic_tasks": entries} if tfvars else entries, indent=2))


@click.group()
def dispatch() -> None:
    """The dispatcher, run by hand."""


@dispatch.command()
def tick() -> None:
    """Run one tick here: publish due delayed tasks, fire due periodic tasks, start
    executions where tasks wait (what POST /internal/tick does)."""
    from dispatcher.jobs import JobsGateway
    from dispatcher.service import Dispatcher
    from taskcore.clients import bucket, storage_client
    from taskcore.logs import configure_logging
    from taskcore.publishing import Publisher
    from taskcore.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    publisher = Publisher(settings)
    jobs = JobsGateway(settings) if settings.dispatch_enabled else None
    try:
        report = Dispatcher(
            settings, _registry(), bucket(settings, storage_client(settings)), publisher, jobs
        ).tick()
    finally:
        publisher.close()
        if jobs is not None:
            jobs.close()
    click.echo(json.dumps(report.as_dict(), indent=2))
