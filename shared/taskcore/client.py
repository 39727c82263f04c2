"""TaskClient: submit, follow and cancel tasks from Python, over the task API.

    from taskcore.client import TaskClient

    client = TaskClient("https://tasks.example.run.app", api_key="...")
    task = client.submit("word_count", text="to be or not to be")
    status = client.wait(task.task_id, timeout=60)
    print(status.state, client.outputs(task.task_id))

Retries are safe: every call that creates something sends an Idempotency-Key generated for
that call, and its retries send the same key, so a request whose answer was lost is never a
second task. Errors are typed (TaskRejectedError, TaskNotFoundError, ...). Behind Cloud Run IAM
pass `identity_token=True`: the client adds a Google identity token for the service (from the
environment's credentials) in Authorization, and the API key goes in X-API-Key.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from taskcore.errors import (
    TaskApiAuthError,
    TaskApiError,
    TaskApiUnavailableError,
    TaskConflictError,
    TaskNotFoundError,
    TaskRejectedError,
    TaskWaitTimeoutError,
)

# States a task does not leave by itself.
FINAL_STATES = frozenset({"succeeded", "dead_lettered", "cancelled"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# An identity token lives an hour; fetch a new one well before.
TOKEN_SECONDS = 45 * 60


class TaskStatusView(dict):
    """A task's status as the API returns it: status["state"] and status.state alike."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def finished(self) -> bool:
        return self.get("state") in FINAL_STATES


@dataclass(frozen=True)
class SubmittedTask:
    """A task the API accepted (queued, or scheduled for later)."""

    task_id: str
    task_type: str
    status: str
    message_id: str | None = None
    idempotency_key: str | None = None
    run_at: datetime | None = None


@dataclass(frozen=True)
class BatchItem:
    """One item of submit_many: a SubmittedTask, or the error that kept it out."""

    index: int
    task: SubmittedTask | None = None
    error: TaskApiError | None = None

    @property
    def ok(self) -> bool:
        return self.task is not None


@dataclass(frozen=True)
class OutputInfo:
    """One output of a succeeded task."""

    name: str
    size: int | None
    content_type: str | None
    uri: str
    url: str


class TaskClient:
    """A client of one task API (a base URL), with an API key and/or an identity token."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        identity_token: bool = False,
        audience: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.session = session or requests.Session()
        self._audience = audience or (self.base_url if identity_token else None)
        self._token: tuple[str, float] | None = None

    # --- tasks ---------------------------------------------------------------------------

    def submit(
        self,
        task_type: str,
        /,
        *,
        idempotency_key: str | None = None,
        delay_seconds: float | None = None,
        run_at: datetime | None = None,
        **fields,
    ) -> SubmittedTask:
        """Queue one task; returns it with its task_id. TaskRejectedError names bad fields.

        delay_seconds or run_at (an aware datetime) hold it until then (status `scheduled`).
        """
        key = idempotency_key or uuid.uuid4().hex
        body = self._call(
            "POST",
            "/submit-task",
            json={"task_type": task_type, **fields, **when(delay_seconds, run_at)},
            headers={"Idempotency-Key": key},
        )
        return _submitted(body, key)

    def submit_many(self, tasks: Iterable[Mapping[str, Any]]) -> list[BatchItem]:
        """Queue many tasks ({"task_type": ..., fields...} each) in one request, each judged
        on its own. Items the queue could not take, or whose outcome is unknown, are sent
        again with the same idempotency keys."""
        items = [dict(task) for task in tasks]
        for item in items:
            item.setdefault("idempotency_key", uuid.uuid4().hex)
        results: dict[int, BatchItem] = {}
        pending = list(range(len(items)))
        for attempt in range(self.retries + 1):
            body = self._call(
                "POST",
                "/submit-tasks",
                json={"tasks": [items[i] for i in pending]},
                ok=(202, 207, 400, 503),
            )
            retry = []
            for position, result in enumerate(
                body.get("results") or body.get("error", {}).get("details") or []
            ):
                index = pending[position]
                status = result.get("status")
                if status in ("queued", "scheduled"):
                    results[index] = BatchItem(
                        index, task=_submitted(result, items[index]["idempotency_key"])
                    )
                elif status in ("failed", "unknown") and attempt < self.retries:
                    retry.append(index)
                else:
                    results[index] = BatchItem(index, error=_item_error(result))
            if not retry:
                break
            pending = retry
            _sleep_backoff(attempt)
        return [results[i] for i in range(len(items)) if i in results]

    def get(self, task_id: str) -> TaskStatusView:
        """The task's status record (state, attempts, errors, outputs, progress, ...)."""
        return TaskStatusView(self._call("GET", f"/tasks/{_segment(task_id)}"))

    def wait(
        self, task_id: str, timeout: float = 300.0, poll_seconds: float = 0.5
    ) -> TaskStatusView:
        """Poll until the task is succeeded, dead_lettered or cancelled; its final status."""
        deadline = time.monotonic() + timeout
        delay = min(0.1, poll_seconds)
        while True:
            try:
                status = self.get(task_id)
            except TaskNotFoundError:
                status = None  # accepted a moment ago: its record may not be readable yet
            if status is not None and status.finished:
                return status
            if time.monotonic() + delay > deadline:
                state = status.get("state") if status else "unknown"
                raise TaskWaitTimeoutError(
                    f"task {task_id} is still {state} after {timeout:g}s", status=0, code="timeout"
                )
            time.sleep(delay)
            delay = min(delay * 2, poll_seconds)

    def list(self, state: str | None = None, limit: int = 50) -> list[TaskStatusView]:
        """Recent tasks, newest first, optionally in one state. Needs an admin key
        (GET /admin/tasks): listing shows every caller's tasks."""
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["status"] = state
        body = self._call("GET", "/admin/tasks", params=params)
        return [TaskStatusView(record) for record in body.get("tasks", [])]

    def outputs(self, task_id: str) -> list[OutputInfo]:
        """The outputs of a succeeded task: names, sizes, types, and where to fetch them."""
        body = self._call("GET", f"/tasks/{_segment(task_id)}/outputs")
        return [
            OutputInfo(
                name=o["name"],
                size=o.get("size"),
                content_type=o.get("content_type"),
                uri=o.get("uri", ""),
                url=self.base_url + o["url"]
                if o.get("url", "").startswith("/")
                else o.get("url", ""),
            )
            for o in body.get("outputs", [])
        ]

    def download(self, task_id: str, name: str) -> bytes:
        """One output's content."""
        response = self._request(
            "GET", f"/tasks/{_segment(task_id)}/outputs/{quote(name, safe='/')}", stream=False
        )
        return response.content

    def cancel(self, task_id: str) -> TaskStatusView:
        """Cancel a task: at once if it has not started, at its next check if it runs.
        TaskConflictError when it already finished."""
        return TaskStatusView(self._call("DELETE", f"/tasks/{_segment(task_id)}"))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------

    def _call(self, method: str, path: str, *, ok=(200, 201, 202), **kwargs) -> dict:
        response = self._request(method, path, ok=ok, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise TaskApiError(
                f"{method} {path}: the API answered {response.status_code} without JSON",
                status=response.status_code,
                code="not_json",
            ) from None

    def _request(self, method: str, path: str, *, ok=(200, 201, 202), headers=None, **kwargs):
        headers = {**(headers or {}), **self._auth_headers()}
        last: TaskApiError | None = None
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(
                    method, self.base_url + path, headers=headers, timeout=self.timeout, **kwargs
                )
            except requests.RequestException as exc:
                # The request may or may not have arrived: safe to repeat (same key, or a read).
                last = TaskApiUnavailableError(
                    f"{method} {path}: {type(exc).__name__}: {exc}", status=0, code="unreachable"
                )
            else:
                if response.status_code in ok:
                    return response
                error = _error_of(response, method, path)
                if response.status_code not in RETRY_STATUSES:
                    raise error
                last = error
            if attempt < self.retries:
                _sleep_backoff(attempt, getattr(last, "retry_after", None))
        raise last

    def _auth_headers(self) -> dict[str, str]:
        headers = {}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if self._audience:
            headers["Authorization"] = f"Bearer {self._identity_token()}"
        return headers

    def _identity_token(self) -> str:
        if self._token is None or time.monotonic() > self._token[1]:
            import google.auth.transport.requests
            import google.oauth2.id_token

            token = google.oauth2.id_token.fetch_id_token(
                google.auth.transport.requests.Request(), self._audience
            )
            self._token = (token, time.monotonic() + TOKEN_SECONDS)
        return self._token[0]


def _segment(task_id: str) -> str:
    return quote(task_id, safe="")


def when(delay_seconds: float | None = None, run_at: datetime | None = None) -> dict[str, Any]:
    """The fields that delay a task: for submit(), or to add to a submit_many() item."""
    fields: dict[str, Any] = {}
    if delay_seconds is not None:
        fields["delay_seconds"] = delay_seconds
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at needs a time zone (e.g. datetime.now(UTC))")
        fields["run_at"] = run_at.isoformat()
    return fields


def _submitted(body: Mapping[str, Any], key: str | None) -> SubmittedTask:
    return SubmittedTask(
        task_id=body["task_id"],
        task_type=body.get("task_type", ""),
        status=body.get("status", "queued"),
        message_id=body.get("message_id"),
        idempotency_key=key,
        run_at=datetime.fromisoformat(body["run_at"]) if body.get("run_at") else None,
    )


_ERRORS = {
    400: TaskRejectedError,
    401: TaskApiAuthError,
    403: TaskApiAuthError,
    404: TaskNotFoundError,
    409: TaskConflictError,
    413: TaskRejectedError,
    415: TaskRejectedError,
    422: TaskRejectedError,
}


def _error_of(response: requests.Response, method: str, path: str) -> TaskApiError:
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    kind = _ERRORS.get(response.status_code)
    if kind is None:
        kind = TaskApiUnavailableError if response.status_code >= 429 else TaskApiError
    message = error.get("message") or f"{method} {path}: HTTP {response.status_code}"
    exc = kind(
        message,
        status=response.status_code,
        code=error.get("code", "http_error"),
        details=error.get("details"),
    )
    retry_after = response.headers.get("Retry-After", "")
    exc.retry_after = float(retry_after) if retry_after.isdigit() else None
    return exc


def _item_error(result: Mapping[str, Any]) -> TaskApiError:
    error = result.get("error") or {}
    kind = (
        TaskApiUnavailableError
        if result.get("status") in ("failed", "unknown")
        else TaskRejectedError
    )
    return kind(
        error.get("message", "item not queued"),
        status=0,
        code=error.get("code", result.get("status", "rejected")),
        details=error.get("details"),
    )


def _sleep_backoff(attempt: int, retry_after: float | None = None) -> None:
    delay = retry_after if retry_after is not None else min(8.0, 0.25 * 2**attempt)
    time.sleep(delay * random.uniform(0.8, 1.2))
