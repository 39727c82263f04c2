"""Submitting the campaign's tasks through the API at a steady rate, recording every answer.

Submission i (`draw(i)`) is due `i / rate` seconds after the start and is sent by one of
`threads` request threads; a slow API (Pub/Sub blackholed: 503 after
PUBLISH_TIMEOUT_SECONDS) holds threads, so submissions then fall behind and catch up
without more than `threads` in flight. Submissions go on until `target` were accepted (at
most `max_submissions` in all): refused ones are replaced by new ones.

Answers: 202 → accepted (the task id is the API's); 503 → refused; no answer within
`timeout` → timeout; anything else → error (the campaign's own mistake, reported). Only
accepted tasks are tracked; the others may still run, and the checker holds those that did
to the same rules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from chaos.ledger import ACCEPTED, Ledger, Submission
from chaos.workload import TaskSpec

log = logging.getLogger(__name__)

REFUSED = "refused"
TIMEOUT = "timeout"
ERROR = "error"
PROGRESS_EVERY = 1000


class Submitter:
    """Sends specs to POST /submit-task on schedule; see the module docstring."""

    def __init__(
        self,
        api_url: str,
        draw: Callable[[int], TaskSpec],
        ledger: Ledger,
        *,
        target: int,
        rate: float,
        max_submissions: int | None = None,
        threads: int = 32,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.url = f"{api_url.rstrip('/')}/submit-task"
        self.draw = draw
        self.ledger = ledger
        self.target = target
        self.max_submissions = max_submissions or 2 * target + 100
        self.rate = rate
        self.threads = threads
        self.timeout = timeout
        self.clock = clock
        self.started = started if started is not None else clock()
        self._local = threading.local()
        self._changed = threading.Condition()
        self._in_flight = 0
        self._accepted = 0
        self.sent = 0
        self.finished_at: float | None = None

    def run(self, stop: threading.Event) -> None:
        """Submit on schedule until `target` are accepted (or stop is set); returns when every
        submission sent is answered."""
        begin = self.clock()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="submit") as pool:
            while self.sent < self.max_submissions and self._wait_for_room(stop):
                due = begin + self.sent / self.rate
                if stop.wait(max(0.0, due - self.clock())):
                    break
                spec = self.draw(self.sent)
                self.sent += 1
                if self.sent % PROGRESS_EVERY == 0:
                    log.info("submitted %d, %d accepted so far", self.sent, self._accepted)
                with self._changed:
                    self._in_flight += 1
                pool.submit(self._submit, spec)
        self.finished_at = self.clock() - self.started

    def _wait_for_room(self, stop: threading.Event) -> bool:
        """Whether to send another: a free thread, and the target not reached or in reach."""
        with self._changed:
            while not stop.is_set():
                if self._accepted >= self.target:
                    return False
                if (
                    self._in_flight < self.threads
                    and self._accepted + self._in_flight < self.target
                ):
                    return True
                self._changed.wait(0.5)
        return False

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _submit(self, spec: TaskSpec) -> None:
        sent = self.clock()
        submission = self._post(spec, sent)
        self.ledger.submitted(submission)
        with self._changed:
            self._in_flight -= 1
            self._accepted += submission.outcome == ACCEPTED
            self._changed.notify_all()

    def _post(self, spec: TaskSpec, sent: float) -> Submission:
        at = sent - self.started
        try:
            response = self._session().post(self.url, json=spec.body(), timeout=self.timeout)
        except requests.Timeout:
            return Submission(spec, at, TIMEOUT, seconds=self.clock() - sent)
        except requests.RequestException as exc:
            return Submission(spec, at, ERROR, detail=str(exc)[:300], seconds=self.clock() - sent)
        seconds = self.clock() - sent
        if response.status_code == 202:
            task_id = response.json()["task_id"]
            return Submission(spec, at, ACCEPTED, 202, task_id, seconds=seconds)
        outcome = REFUSED if response.status_code == 503 else ERROR
        if outcome == ERROR:
            log.error(
                "submission %s answered %d: %s", spec.tag, response.status_code, response.text
            )
        return Submission(
            spec, at, outcome, response.status_code, detail=response.text[:300], seconds=seconds
        )
