"""Purging dead letters: archive them first if asked (create-only), then ack them (every
copy of each)."""

from __future__ import annotations

import time
from collections.abc import Callable

from google.cloud import pubsub_v1, storage

from taskcore.dlq.audit import (
    Actor,
    DlqUsageError,
    OperationResult,
    count_copies,
    record_audit,
    write_archive,
)
from taskcore.dlq.letters import DeadLetterFilter, attach_status, select
from taskcore.dlq.scan import DlqScan
from taskcore.settings import Settings
from taskcore.status import StatusStore


def run_purge(
    settings: Settings,
    flt: DeadLetterFilter,
    *,
    actor: Actor,
    bucket: storage.Bucket,
    subscriber: pubsub_v1.SubscriberClient | None = None,
    archive: bool = False,
    limit: int | None = None,
    dry_run: bool = False,
    confirm: Callable[[int], bool] | None = None,
) -> OperationResult:
    """Scan, select, (confirm,) archive if asked (create-only), then ack; audit it."""
    if flt.is_empty:
        raise DlqUsageError(
            "say which dead letters to purge: all, task ids, task type, error or since"
        )
    result = OperationResult("purge", flt.describe(), dry_run=dry_run)
    started = time.monotonic()
    try:
        with DlqScan(settings, subscriber) as scan:
            letters = scan.scan()
            attach_status(letters, StatusStore(bucket))
            matched = select(letters, flt)
            chosen = matched[:limit] if limit else matched
            result.in_dlq, result.matched, result.selected = len(letters), len(matched), len(chosen)
            result.copies = count_copies(chosen)
            result.task_ids = [letter.task_id for letter in chosen]
            if dry_run or not chosen:
                return result
            if confirm is not None and not confirm(len(chosen)):
                result.cancelled = True
                return result
            if archive:
                # Written (create-only) before any ack: if it fails, nothing is purged.
                result.archive = write_archive(bucket, chosen)
            not_acked = scan.ack(chosen)
            result.done = len(chosen) - len(not_acked)
            result.failed.extend(
                {"task_id": letter.task_id, "message_id": letter.message_id, "error": "ack failed"}
                for letter in not_acked
            )
    finally:
        result.seconds = round(time.monotonic() - started, 3)
    record_audit(bucket, actor, result, limit=limit, archive=archive)
    return result
