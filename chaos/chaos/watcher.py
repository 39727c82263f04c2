"""A thread that reads the records of random tasks while the campaign runs, and checks that
each sighting follows the last one (`chaos.records.check_step`).

It reads straight from the GCS emulator, past the proxies: the faults are the pipeline's,
not the observer's. Besides the violations it keeps, per task, the last sighting (the
checker judges the final record against it) and the outputs a succeeded record named when
first seen (which must never change).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from chaos.records import Observation, check_step
from chaos.violations import Violation
from taskcore.status import StatusStore, TaskState

log = logging.getLogger(__name__)


class RecordWatcher:
    """Reads one random task's record every 1/reads_per_second seconds until stopped."""

    def __init__(
        self,
        store: StatusStore,
        pick: Callable[[random.Random], str | None],
        *,
        seed: int,
        reads_per_second: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
    ) -> None:
        self.store = store
        self.pick = pick
        self.interval = 1.0 / reads_per_second
        self.clock = clock
        # Sightings say when, in seconds after this moment (the campaign's start).
        self.started = started if started is not None else clock()
        self._rng = random.Random(f"{seed}:watcher")
        self._lock = threading.Lock()
        self._last: dict[str, Observation] = {}
        self._first_outputs: dict[str, dict[str, int | None]] = {}
        self._violations: list[Violation] = []
        self.reads = 0
        self.read_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-watcher", daemon=True)

    def start(self) -> RecordWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> RecordWatcher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            task_id = self.pick(self._rng)
            if task_id is None:
                continue
            try:
                self.observe(task_id)
            except Exception as exc:  # an unreadable moment is no evidence either way
                self.read_errors += 1
                log.debug("record of %s not read: %s", task_id, exc)

    def observe(self, task_id: str) -> Observation:
        """Read task_id's record now and check it against the last sighting."""
        stored = self.store.read(task_id)
        sighting = Observation.of(stored, self.clock() - self.started)
        with self._lock:
            self.reads += 1
            before = self._last.get(task_id)
            if before is not None:
                self._violations.extend(check_step(task_id, before, sighting))
            if before is None or sighting.generation is not None:
                self._last[task_id] = sighting
            if sighting.state == TaskState.SUCCEEDED and task_id not in self._first_outputs:
                self._first_outputs[task_id] = dict(sighting.outputs)
        return sighting

    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def last_sightings(self) -> dict[str, Observation]:
        with self._lock:
            return dict(self._last)

    def first_outputs(self) -> dict[str, dict[str, int | None]]:
        """Outputs (name → generation) of each task's succeeded record, as first seen."""
        with self._lock:
            return {task_id: dict(outputs) for task_id, outputs in self._first_outputs.items()}
