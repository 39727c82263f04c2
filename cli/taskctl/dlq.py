"""taskctl dlq: browse, show, replay and purge dead letters (the logic is in the modules beside this one).

Listing never consumes: every message stays in the DLQ subscription. Replay and purge need
a selection (--all or a filter), ask for confirmation with the count unless --yes, and
append an audit record to the bucket.
"""

from __future__ import annotations

import functools
import json
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

import click

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _settings():
    from taskcore.errors import TaskPipelineError
    from taskcore.settings import Settings

    try:
        return Settings.from_env()
    except TaskPipelineError as exc:
        raise click.ClickException(str(exc)) from None


def _bucket(settings):
    from taskcore.clients import bucket, storage_client

    return bucket(settings, storage_client(settings))


def filter_options(*, with_all: bool) -> Callable:
    """The selection options shared by list, replay and purge."""

    def decorate(command: Callable) -> Callable:
        options = [
            click.option("--task-id", "task_ids", multiple=True, help="This task (repeatable)."),
            click.option("--task-type", help="Only tasks of this type."),
            click.option("--error", help="Error type or message contains this (any case)."),
            click.option("--since", help="Dead-lettered since: 30m, 2h, 7d or an ISO 8601 time."),
        ]
        if with_all:
            options.insert(0, click.option("--all", "everything", is_flag=True, help="Every one."))
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _filter(task_ids=(), task_type=None, error=None, since=None, everything=False):
    from taskcore.dlq.letters import DeadLetterFilter, parse_since

    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    return DeadLetterFilter(
        task_ids=frozenset(task_ids),
        task_type=task_type,
        error=error,
        since=since_at,
        everything=everything,
    )


# Control, format (bidi overrides, zero-width), surrogate and line/paragraph separator
# characters: in a terminal they move the cursor, recolour, retitle or reorder what follows.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """text with each character a terminal would obey rather than show written as an escape.

    Dead letters carry whatever a client or a handler put in them (task ids, types, error
    messages): an operator's terminal must show that text, never act on it.
    """
    return "".join(
        _escape(char) if unicodedata.category(char) in _HIDDEN_CATEGORIES else char for char in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _short(path: str | None) -> str:
    return (path or "-").rsplit("/", 1)[-1]


def _cut(text: str, width: int) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group()
def dlq() -> None:
    """Browse, replay and purge dead letters (the DLQ subscription)."""


@dlq.command("list")
@filter_options(with_all=False)
@click.option("--limit", type=click.IntRange(min=1), help="Show at most N (oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(task_ids, task_type, error, since, limit, as_json) -> None:
    """List dead letters with their reasons; every message stays in the DLQ."""
    from taskcore.dlq.scan import browse
    from taskcore.status import StatusStore

    settings = _settings()
    flt = _filter(task_ids, task_type, error, since)
    listing = browse(settings, flt, store=StatusStore(_bucket(settings)), limit=limit)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "in_dlq": listing.total,
                    "matched": listing.matched_count,
                    "dead_letters": [letter.summary() for letter in listing.shown],
                },
                indent=2,
            )
        )
        return
    rows = [
        (
            printable(letter.task_id),
            printable(letter.task_type or "-"),
            _cut(f"{letter.error_type}: {letter.error_message}", 60),
            str(letter.attempts),
            # One dead letter published more than once (a crash between publish and record)
            # is one letter: say how many messages it is.
            str(len(letter.messages)),
            letter.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%SZ"),
            printable(_short(letter.source_subscription)),
        )
        for letter in listing.shown
    ]
    header = ("TASK ID", "TYPE", "ERROR", "ATTEMPTS", "COPIES", "DEAD-LETTERED", "SOURCE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
    click.echo(
        f"{listing.matched_count} of {listing.total} dead letters match"
        + (f"; showing the {len(rows)} oldest" if len(rows) < listing.matched_count else ""),
        err=True,
    )


def _skipped_and_new(result) -> str:
    """The parts of a replay summary about skipped letters and replays that are new tasks."""
    text = ""
    if result.skipped:
        text += (
            f"; {len(result.skipped)} skipped (their task already succeeded; the stale dead "
            "letters are removed)"
        )
    if result.new_tasks:
        text += f"; {len(result.new_tasks)} run as new tasks (payload changed by --set)"
    return text


@dlq.command()
@click.argument("task_id")
def show(task_id: str) -> None:
    """Print a dead letter in full: attributes, payload and status record."""
    from taskcore.dlq.letters import DeadLetterFilter
    from taskcore.dlq.scan import browse
    from taskcore.status import StatusStore

    settings = _settings()
    store = StatusStore(_bucket(settings))
    listing = browse(settings, DeadLetterFilter(task_ids=frozenset([task_id])), store=store)
    if not listing.shown:
        raise click.ClickException(f"no dead letter of task {task_id} in the DLQ")
    status = store.get(task_id)
    records = []
    for letter in listing.shown:
        letter.status = status
        records.append(letter.record())
    click.echo(json.dumps(records[0] if len(records) == 1 else records, indent=2))


def _confirmer(verb: str, where: str, yes: bool, seen: dict[str, int]) -> Callable[[int], bool]:
    def confirm(count: int) -> bool:
        seen["count"] = count
        return yes or click.confirm(f"{verb} {count} dead letter(s){where}?", default=False)

    return confirm


def _finish(result, as_json: bool, summary: str) -> None:
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        click.echo(summary, err=True)
        for failure in result.failed[:20]:
            failed = f"{failure.get('task_id', '')}: {failure['error']}"
            click.echo(f"  failed {printable(failed)}", err=True)
        if result.audit_error:
            click.echo(f"  {printable(result.audit_error)}", err=True)
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not result.ok:
        sys.exit(EXIT_FAILED)


def _guard(operation: Callable[[], Any]) -> Any:
    from taskcore.dlq.audit import DlqUsageError
    from taskcore.dlq.replay import ReplayRefused
    from taskcore.errors import InfrastructureError

    try:
        return operation()
    except DlqUsageError as exc:
        raise click.UsageError(f"{exc} (--all, --task-id, --task-type, --error, --since)") from None
    except ReplayRefused as exc:
        for problem in exc.problems[:20]:
            invalid = f"{problem['task_id']}: {problem['error']}"
            click.echo(f"  invalid {printable(invalid)}", err=True)
        raise click.ClickException(printable(str(exc))) from None
    except InfrastructureError as exc:
        raise click.ClickException(str(exc)) from None


@dlq.command()
@filter_options(with_all=True)
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most N (oldest first).")
@click.option("--rate", help="At most this many per second: N/s (or N/m).")
@click.option(
    "--set", "sets", multiple=True, metavar="FIELD=VALUE", help="Patch a payload field (JSON)."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replay(
    everything, task_ids, task_type, error, since, dry_run, limit, rate, sets, yes, as_json
) -> None:
    """Republish dead letters to the task topic; each leaves the DLQ once its publish is confirmed."""
    from taskcore.dlq.audit import Actor
    from taskcore.dlq.replay import parse_rate, run_replay
    from taskctl.fields import parse_field

    settings = _settings()
    flt = _filter(task_ids, task_type, error, since, everything)
    try:
        per_second = parse_rate(rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate") from None
    patches = [parse_field(text) for text in sets]
    seen: dict[str, int] = {}
    bar = _LazyBar(seen, "Replaying")
    try:
        result = _guard(
            lambda: run_replay(
                settings,
                flt,
                actor=Actor.os_user(),
                bucket=_bucket(settings),
                dry_run=dry_run,
                limit=limit,
                rate=per_second,
                sets=patches,
                confirm=_confirmer("Replay", f" to {settings.topic_name}", yes, seen),
                progress=bar.advance,
            )
        )
    finally:
        bar.close()
    if dry_run:
        if not as_json:
            for item in result.preview if patches else []:
                click.echo(json.dumps(item, sort_keys=True))
            for task_id in result.task_ids:
                click.echo(printable(task_id))
        summary = (
            f"Dry run: would replay {len(result.task_ids)} of {result.matched} matching "
            f"({result.in_dlq} in the DLQ); nothing changed." + _skipped_and_new(result)
        )
    elif result.cancelled:
        summary = "Cancelled; nothing changed."
    else:
        summary = (
            f"Replayed {result.done} of {result.selected} to {settings.topic_name} "
            f"in {result.seconds:.1f}s; {len(result.failed)} failed; "
            f"{result.left_in_dlq} left in the DLQ"
            + _skipped_and_new(result)
            + (" (interrupted)" if result.interrupted else "")
            + (f"; audit {result.audit}" if result.audit else "")
        )
    _finish(result, as_json, summary)


@dlq.command()
@filter_options(with_all=True)
@click.option("--archive", is_flag=True, help="First write them to gs://BUCKET/dlq-archive/.")
@click.option("--limit", type=click.IntRange(min=1), help="Purge at most N (oldest first).")
@click.option("--dry-run", is_flag=True, help="Show what would be purged; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def purge(everything, task_ids, task_type, error, since, archive, limit, dry_run, yes, as_json):
    """Remove dead letters from the DLQ for good (optionally archiving them first)."""
    from taskcore.dlq.audit import Actor
    from taskcore.dlq.purge import run_purge

    settings = _settings()
    flt = _filter(task_ids, task_type, error, since, everything)
    result = _guard(
        lambda: run_purge(
            settings,
            flt,
            actor=Actor.os_user(),
            bucket=_bucket(settings),
            archive=archive,
            limit=limit,
            dry_run=dry_run,
            confirm=_confirmer("Purge", " for good" if not archive else "", yes, {}),
        )
    )
    if dry_run:
        summary = f"Dry run: would purge {result.selected} of {result.in_dlq}; nothing changed."
        if not as_json:
            for task_id in result.task_ids:
                click.echo(printable(task_id))
    elif result.cancelled:
        summary = "Cancelled; nothing changed."
    else:
        summary = (
            f"Purged {result.done} of {result.in_dlq} dead letters"
            + (f"; archived to {result.archive}" if result.archive else "")
            + (f"; audit {result.audit}" if result.audit else "")
        )
    _finish(result, as_json, summary)


class _LazyBar:
    """A click progress bar that appears once the count is known and the replay is long."""

    MIN_ITEMS = 10

    def __init__(self, seen: dict[str, int], label: str) -> None:
        self.seen = seen
        self.label = label
        self._bar = None

    @functools.cached_property
    def _wanted(self) -> bool:
        return self.seen.get("count", 0) >= self.MIN_ITEMS

    def advance(self, count: int) -> None:
        if not self._wanted:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=self.seen["count"], label=self.label, file=sys.stderr
            )
            self._bar.__enter__()
        self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
