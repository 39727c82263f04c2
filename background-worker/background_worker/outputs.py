"""Task outputs in Cloud Storage: create-only objects under outputs/<task_id>/.

Every output name derives from task_id, and every write is create-only
(if_generation_match=0), so a redelivered or replayed task can never produce a second,
different output. The manifest is written last: its presence means "this task is done".
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import storage

OUTPUT_PREFIX = "outputs"
MANIFEST = "manifest.json"


def output_prefix(task_id: str) -> str:
    """The object prefix that holds every output of task_id."""
    return f"{OUTPUT_PREFIX}/{task_id}/"


def manifest_name(task_id: str) -> str:
    """The object whose existence marks task_id as done."""
    return output_prefix(task_id) + MANIFEST


def read_manifest(bucket: storage.Bucket, task_id: str) -> dict | None:
    """The task's manifest if the task already completed, else None."""
    try:
        return json.loads(bucket.blob(manifest_name(task_id)).download_as_bytes())
    except gexc.NotFound:
        return None


class OutputWriter:
    """Writes one task's outputs create-only and records them for the manifest."""

    def __init__(
        self, bucket: storage.Bucket, task_id: str, check_alive: Callable[[], None]
    ) -> None:
        self.bucket = bucket
        self.task_id = task_id
        # Called before every write: a task past its time limit or cancelled by shutdown
        # raises here instead of writing after its message may already be redelivered.
        self._check_alive = check_alive
        self.written: list[dict] = []

    def uri(self, name: str) -> str:
        """The gs:// URI of an output called name."""
        return f"gs://{self.bucket.name}/{output_prefix(self.task_id)}{name}"

    def write(self, name: str, data: bytes | str, content_type: str) -> str:
        """Write one output create-only; an existing one from an earlier attempt is kept."""
        self._check_alive()
        blob = self.bucket.blob(output_prefix(self.task_id) + name)
        if isinstance(data, str):
            data = data.encode("utf-8")
        # PreconditionFailed: an earlier delivery of this task wrote it before dying. Outputs
        # derive only from the task, so the existing object stands; writing again makes two.
        with contextlib.suppress(gexc.PreconditionFailed):
            blob.upload_from_string(data, content_type=content_type, if_generation_match=0)
        uri = self.uri(name)
        self.written.append(
            {"name": name, "uri": uri, "size": len(data), "content_type": content_type}
        )
        return uri

    def write_json(self, name: str, value) -> str:
        """Write a JSON output."""
        return self.write(
            name, json.dumps(value, indent=2, sort_keys=True, default=str), "application/json"
        )

    def commit(self, task_type: str, execution: str) -> dict:
        """Write the manifest last, marking the task done; returns it."""
        manifest = {
            "task_id": self.task_id,
            "task_type": task_type,
            "outputs": self.written,
            "completed_at": datetime.now(UTC).isoformat(),
            "execution": execution,
        }
        self.write(MANIFEST, json.dumps(manifest, indent=2), "application/json")
        return manifest
