"""taskctl tasks: submit, list, show, wait for and cancel tasks through the API (TaskClient).

Everything goes through the HTTP API with a key, as any client would (TASK_API_URL,
TASK_API_KEY); `list` reads /admin/tasks and so needs an admin key.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from taskctl.fields import parse_field

EXIT_FAILED = 1
EXIT_TIMEOUT = 2

api_url_option = click.option(
    "--api-url", envvar="TASK_API_URL", default="http://127.0.0.1:8080", help="The API's base URL."
)
api_key_option = click.option(
    "--api-key", envvar="TASK_API_KEY", default=None, help="API key, if the API requires one."
)
identity_option = click.option(
    "--identity-token/--no-identity-token",
    envvar="TASK_API_IDENTITY_TOKEN",
    default=False,
    help="Add a Google identity token (the API behind Cloud Run IAM).",
)


def _client(api_url: str, api_key: str | None, identity_token: bool):
    from taskcore.client import TaskClient

    return TaskClient(api_url, api_key, identity_token=identity_token)


def _echo(body: Any) -> None:
    click.echo(json.dumps(body, indent=2, default=str))


def _api_errors(run):
    """Turn the client's typed errors into a message and exit 1 (2 for a wait that timed out)."""
    from taskcore.errors import TaskApiError, TaskWaitTimeoutError

    try:
        return run()
    except TaskWaitTimeoutError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_TIMEOUT)
    except TaskApiError as exc:
        click.echo(f"Error: {exc} ({exc.code})", err=True)
        if getattr(exc, "details", None):
            _echo(exc.details)
        sys.exit(EXIT_FAILED)


@click.group()
def tasks() -> None:
    """Submit, list, show, wait for and cancel tasks through the API."""


@tasks.command()
@click.argument("task_type")
@click.argument("fields", nargs=-1)
@click.option("--delay", type=float, default=None, help="Hold the task this many seconds.")
@click.option(
    "--at", "run_at", default=None, help="Run the task at this time (RFC 3339, with offset)."
)
@click.option("--wait", "wait_seconds", type=float, default=None, help="Then wait this long.")
@api_url_option
@api_key_option
@identity_option
def submit(task_type, fields, delay, run_at, wait_seconds, api_url, api_key, identity_token):
    """Submit one task: taskctl tasks submit file_processing filename=report.csv"""
    values = dict(parse_field(f) for f in fields)
    at = datetime.fromisoformat(run_at.replace("Z", "+00:00")) if run_at else None
    with _client(api_url, api_key, identity_token) as client:

        def run():
            task = client.submit(task_type, delay_seconds=delay, run_at=at, **values)
            _echo(
                {
                    "task_id": task.task_id,
                    "status": task.status,
                    "message_id": task.message_id,
                    "run_at": task.run_at.isoformat() if task.run_at else None,
                }
            )
            if wait_seconds is not None:
                _echo(dict(client.wait(task.task_id, timeout=wait_seconds)))

        _api_errors(run)


@tasks.command("list")
@click.option("--state", default=None, help="Only tasks in this state.")
@click.option("--limit", type=int, default=20)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@api_url_option
@api_key_option
@identity_option
def list_tasks(state, limit, as_json, api_url, api_key, identity_token):
    """Recent tasks, newest change first (needs an admin key).

    Read from the transition journal: a change shows within about 10 s (the journal's flush).
    """
    with _client(api_url, api_key, identity_token) as client:
        records = _api_errors(lambda: client.list(state, limit))
    if as_json:
        _echo([dict(r) for r in records])
        return
    for record in records:
        click.echo(
            f"{record.get('task_id')}  {record.get('state', ''):<13} "
            f"{record.get('task_type', ''):<24} {record.get('updated_at', '')}"
        )


@tasks.command()
@click.argument("task_id")
@api_url_option
@api_key_option
@identity_option
def show(task_id, api_url, api_key, identity_token):
    """A task's status record."""
    with _client(api_url, api_key, identity_token) as client:
        _echo(dict(_api_errors(lambda: client.get(task_id))))


@tasks.command()
@click.argument("task_id")
@click.option("--timeout", type=float, default=300.0, help="Give up after this long (exit 2).")
@api_url_option
@api_key_option
@identity_option
def wait(task_id, timeout, api_url, api_key, identity_token):
    """Wait until the task succeeded, was dead-lettered or cancelled; exit 1 unless succeeded."""
    with _client(api_url, api_key, identity_token) as client:
        status = _api_errors(lambda: client.wait(task_id, timeout=timeout))
    _echo(dict(status))
    if status.get("state") != "succeeded":
        sys.exit(EXIT_FAILED)


@tasks.command()
@click.argument("task_id")
@api_url_option
@api_key_option
@identity_option
def cancel(task_id, api_url, api_key, identity_token):
    """Cancel a task: at once if it has not started, at its next check if it runs."""
    with _client(api_url, api_key, identity_token) as client:
        _echo(dict(_api_errors(lambda: client.cancel(task_id))))


@tasks.command()
@click.argument("task_id")
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the output NAME to this file instead of standard output.",
)
@api_url_option
@api_key_option
@identity_option
def outputs(task_id, name, target, api_url, api_key, identity_token):
    """A succeeded task's outputs: their names, sizes and types, or one output's content.

    taskctl tasks outputs <id>                 lists them
    taskctl tasks outputs <id> results.json    prints one (-o FILE to save it)
    """
    with _client(api_url, api_key, identity_token) as client:
        if name is None:
            listed = _api_errors(lambda: client.outputs(task_id))
            for output in listed:
                click.echo(
                    f"{output.name}  {output.size if output.size is not None else '-'} bytes  "
                    f"{output.content_type or '-'}"
                )
            return
        content = _api_errors(lambda: client.download(task_id, name))
    if target:
        with open(target, "wb") as file:
            file.write(content)
        click.echo(f"wrote {len(content)} bytes to {target}", err=True)
    else:
        click.get_binary_stream("stdout").write(content)
