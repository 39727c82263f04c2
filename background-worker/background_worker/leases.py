"""Leases that outlive every failure path: Pub/Sub message leases and run claims.

`LeaseKeeper` extends the ack deadline of every message the execution still holds: those
being worked on, those waiting for another run of their task, and those acked but whose ack
Pub/Sub has not confirmed yet. A failed extension is tried again within a second, not at
the next round.

`ClaimKeeper` keeps each run's claim on its task (the `run` of the status record) alive: it
makes the claim a moment after the run starts (fast runs never need one), renews it, writes
the run's progress at most once a second, and tells the run when the claim was lost (another
run took the task over after ours looked dead), so that it stops. A run that cannot renew
its claim (storage unreachable from this execution only, say) is stopped itself at three
quarters of the claim, before another execution may take the task over: the claim fences
the run, so a task does not run in two places at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from background_worker.acks import Settler
from taskcore.lifecycle import Delivery, claim, renew
from taskcore.status import Progress, StatusStore, utcnow

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# A run whose claim could not be renewed stops once this share of the claim has gone by since
# the last write that landed: the rest lets it stop (a child gets STOP_GRACE_SECONDS) before
# the claim runs out and another delivery may take the task over.
FENCE_AT = 0.75


class LeaseKeeper:
    """A thread that extends the leases of held messages until each is settled or its limit."""

    def __init__(self, settler: Settler, ack_deadline_seconds: int) -> None:
        self.settler = settler
        self.ack_deadline_seconds = ack_deadline_seconds
        # Renew well before expiry: at 40% of the deadline there are two chances left.
        self.interval = max(0.5, ack_deadline_seconds * 0.4)
        self._leases: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self.failures = 0

    def start(self) -> LeaseKeeper:
        """Start renewing in the background."""
        self._thread.start()
        return self

    def hold(self, ack_id: str, until: float) -> None:
        """Keep ack_id leased until monotonic time `until` or until released."""
        with self._lock:
            self._leases[ack_id] = until

    def release(self, ack_id: str) -> None:
        """Stop extending ack_id for its own sake (an unsent ack is still kept)."""
        with self._lock:
            self._leases.pop(ack_id, None)

    def held(self) -> list[str]:
        """Ack ids currently leased."""
        with self._lock:
            return list(self._leases)

    def stop(self) -> None:
        """Stop the renewal thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            try:
                wait = self.interval if self._renew() else RETRY_SECONDS
            except Exception:  # never let the thread die: the next round tries again
                log.exception("lease renewal round failed")
                wait = RETRY_SECONDS

    def _renew(self) -> bool:
        now = time.monotonic()
        with self._lock:
            expired = [a for a, until in self._leases.items() if until <= now]
            for ack_id in expired:
                del self._leases[ack_id]
            live = set(self._leases)
        if expired:
            log.warning("%d messages passed their lease limit; letting them lapse", len(expired))
        live |= self.settler.unsent_acks()
        if not live:
            return True
        if self.settler.extend(live, self.ack_deadline_seconds):
            return True
        self.failures += 1
        return False


@dataclass
class ClaimedRun:
    """One run the ClaimKeeper looks after."""

    delivery: Delivery
    run_id: str
    execution: str
    claim_at: float  # monotonic time of the first claim (a fast run finishes before it)
    on_lost: Callable[[str], None]
    isolated: bool = False
    claimed: bool = False
    next_renewal: float = 0.0
    progress: Progress | None = None
    progress_written: Progress | None = None
    last_write: float = 0.0
    next_cancel_check: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    fenced: bool = False  # stopped by the fence: its claim is running out unrenewed


class ClaimKeeper:
    """A thread that makes, renews and records the progress of run claims."""

    TICK_SECONDS = 0.25
    PROGRESS_SECONDS = 1.0  # GCS allows about one write per second to one object
    # A running task's record is read this often for a cancellation (between renewals).
    CANCEL_POLL_SECONDS = 2.0

    def __init__(self, store: StatusStore, claim_seconds: float) -> None:
        self.store = store
        self.claim_seconds = claim_seconds
        self.renew_every = max(0.5, claim_seconds / 3)
        self.fence_after = claim_seconds * FENCE_AT
        self._runs: dict[str, ClaimedRun] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-keeper", daemon=True)
        self._fence_thread = threading.Thread(
            target=self._fence_loop, name="claim-fence", daemon=True
        )

    def start(self) -> ClaimKeeper:
        self._thread.start()
        self._fence_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._fence_thread.join(timeout=10)

    def watch(self, run: ClaimedRun) -> None:
        """Look after run until forget(); a run that is already claimed is only renewed."""
        if run.claimed:
            # Renewed at once: it may have waited for memory since it claimed the task.
            run.last_write = run.next_renewal = time.monotonic()
        with self._lock:
            self._runs[run.run_id] = run

    def forget(self, run_id: str) -> ClaimedRun | None:
        """Stop looking after the run; returns once no write of ours for it is in flight."""
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is not None:
            with run.lock:
                run.done = True
        return run

    def report_progress(self, run_id: str, progress: Progress) -> None:
        with self._lock:
            run = self._runs.get(run_id)
        if run is not None:
            run.progress = progress

    def _loop(self) -> None:
        while not self._stop.wait(self.TICK_SECONDS):
            with self._lock:
                runs = list(self._runs.values())
            now = time.monotonic()
            for run in runs:
                try:
                    self._tend(run, now)
                except Exception as exc:  # storage trouble: try again next tick
                    log.warning("claim of run %s not renewed: %s", run.run_id, exc)
                    run.next_renewal = now + RETRY_SECONDS

    def _fence_loop(self) -> None:
        # Apart from the renewals, and without their locks: a renewal can hang in its retries
        # for as long as storage is unreachable, and the claim runs out meanwhile.
        while not self._stop.wait(self.TICK_SECONDS):
            with self._lock:
                runs = list(self._runs.values())
            now = time.monotonic()
            for run in runs:
                if run.claimed and not (run.done or run.fenced):
                    unrenewed = now - run.last_write
                    if unrenewed >= self.fence_after:
                        run.fenced = True
                        try:
                            run.on_lost(f"not renewed for {unrenewed:.1f}s, it runs out soon")
                        except Exception:  # the fence outlives any run's trouble
                            log.exception("run %s could not be told to stop", run.run_id)

    def _tend(self, run: ClaimedRun, now: float) -> None:
        with run.lock:
            if run.done or run.fenced:
                return
            if not run.claimed:
                if now < run.claim_at:
                    return
                result = self.store.transition(
                    run.delivery.task_id,
                    claim(
                        run.delivery,
                        run.run_id,
                        run.execution,
                        utcnow(),
                        self.claim_seconds,
                        isolated=run.isolated,
                    ),
                )
                if result.refused:
                    run.done = True
                    run.on_lost(result.refusal.reason)
                    return
                run.last_write = now  # before `claimed`: the fence reads them without the lock
                run.next_renewal = now + self.renew_every
                run.claimed = True
                return
            if now >= run.next_cancel_check and now < run.next_renewal:
                run.next_cancel_check = now + self.CANCEL_POLL_SECONDS
                stored = self.store.read(run.delivery.task_id)
                if stored is not None and stored.record.cancel_requested_at is not None:
                    run.done = True
                    run.on_lost("cancelled")
                    return
            progress_due = (
                run.progress is not None
                and run.progress is not run.progress_written
                and now - run.last_write >= self.PROGRESS_SECONDS
            )
            if now < run.next_renewal and not progress_due:
                return
            progress = run.progress if progress_due else None
            result = self.store.transition(
                run.delivery.task_id, renew(run.run_id, utcnow(), self.claim_seconds, progress)
            )
            if result.refused:
                run.done = True
                run.on_lost(result.refusal.reason)
                return
            run.next_renewal = now + self.renew_every
            run.last_write = now
            if progress is not None:
                run.progress_written = progress
