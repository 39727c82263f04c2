"""Task outputs in Cloud Storage: create-only objects under outputs/<task_id>/.

Every output name derives from task_id, and every write is create-only
(if_generation_match=0), so a redelivered or replayed task can never produce a second,
different output. The task's status record (taskcore.status), written after the outputs,
is what marks it done.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from google.api_core import exceptions as gexc
from google.cloud import storage

OUTPUT_PREFIX = "outputs"


def output_prefix(task_id: str) -> str:
    """The object prefix that holds every output of task_id."""
    return f"{OUTPUT_PREFIX}/{task_id}/"


class OutputWriter:
    """Writes one task's outputs create-only and remembers their URIs for the status record."""

    def __init__(
        self,
        bucket: storage.Bucket,
        task_id: str,
        check_alive: Callable[[], None],
        retry=None,
    ) -> None:
        self.bucket = bucket
        self.retry = retry
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
            blob.upload_from_string(
                data, content_type=content_type, if_generation_match=0, retry=self.retry
            )
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
