"""taskctl queues: every declared queue, where its messages wait, and how many wait there."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def queues(as_json: bool) -> None:
    """Each queue: its task types, subscription, job and cap, and its backlog now.

    The backlog is Pub/Sub's own count, read from Cloud Monitoring (a few minutes late) or,
    locally, from the pure-Python Pub/Sub emulator (exact).
    """
    from dispatcher.policy import queue_policies
    from taskcore.backlog import BacklogReader, queue_subscriptions
    from taskcore.settings import Settings
    from taskcore.tasks import load_task_modules

    settings = Settings.from_env()
    registry = load_task_modules(settings.task_modules)
    subscriptions = queue_subscriptions(settings, registry.queues())
    policies = queue_policies(settings, list(subscriptions))
    report = BacklogReader(settings).read([*subscriptions.values(), settings.dlq_subscription_name])
    rows = []
    for queue, subscription in subscriptions.items():
        measured = report.subscriptions.get(subscription) if report.available else None
        rows.append(
            {
                "queue": queue,
                "task_types": sorted(t.name for t in registry if t.queue == queue),
                "topic": settings.topic_name_for(queue),
                "subscription": subscription,
                "job": policies[queue].job,
                "max_tasks": policies[queue].task_cap,
                "undelivered": measured.undelivered if measured else None,
                "oldest_unacked_seconds": measured.oldest_unacked_seconds if measured else None,
            }
        )
    dlq = report.subscriptions.get(settings.dlq_subscription_name) if report.available else None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "queues": rows,
                    "dead_letters": dlq.undelivered if dlq else None,
                    "backlog_source": report.source,
                    "backlog_detail": report.detail,
                },
                indent=2,
            )
        )
        return
    header = ("QUEUE", "BACKLOG", "OLDEST", "MAX TASKS", "JOB", "SUBSCRIPTION", "TASK TYPES")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row["queue"],
                _count(row["undelivered"]),
                _age(row["oldest_unacked_seconds"]),
                str(row["max_tasks"]),
                row["job"],
                row["subscription"],
                ", ".join(row["task_types"]) or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    click.echo(f"\ndead letters: {_count(dlq.undelivered if dlq else None)}")
    click.echo(f"backlog: {report.detail}", err=True)


def _count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _age(seconds: int | None) -> str:
    if not seconds:
        return "-"
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"
