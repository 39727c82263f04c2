"""One run of a task: its context, its claim, its handler, and what came of it.

A run writes its outputs under its own prefix (taskcore.outputs), so whatever else happens
to the task it can only ever add a set of its own. It does not touch the status record's
state: `results` records what the RunResult says, conditionally.
"""

from __future__ import annotations

import enum
import logging
import secrets
import time
from dataclasses import dataclass, field

from google.cloud import storage

from background_worker.isolation import ChildSpec, Isolation
from background_worker.leases import ClaimedRun, ClaimKeeper
from background_worker.memory import CHILD_OVERHEAD_MB
from taskcore.context import CANCELLED, SHUTDOWN, SUPERSEDED, RunContext, RunStopped
from taskcore.envelope import TaskEnvelope
from taskcore.failures import Failure, classify
from taskcore.lifecycle import Delivery
from taskcore.settings import Settings
from taskcore.status import OutputRef, Progress
from taskcore.tasks import TaskType

log = logging.getLogger(__name__)

# Runs shorter than this never claim their task: one status write fewer per fast task. A
# duplicate delivery racing a fast run may run too; only one of them can commit (see results).
CLAIM_DELAY_SECONDS = 1.0


class RunEnd(enum.StrEnum):
    """How a run ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class RunResult:
    """What one run produced: outputs, a classified failure, or why it was stopped."""

    end: RunEnd
    run_id: str
    attempt: int
    outputs: list[OutputRef] = field(default_factory=list)
    failure: Failure | None = None
    stop_reason: str | None = None
    claimed: bool = False
    seconds: float = 0.0


def _outputs(refs: list[dict]) -> list[OutputRef]:
    return [OutputRef.model_validate(ref) for ref in refs]


def new_run_id(attempt: int) -> str:
    """A run's id: its attempt number and a random part (two runs may share a number)."""
    return f"{attempt}-{secrets.token_hex(3)}"


class Run:
    """Executes one run of a task on the calling thread."""

    def __init__(
        self,
        *,
        settings: Settings,
        bucket: storage.Bucket,
        claims: ClaimKeeper,
        task_type: TaskType,
        envelope: TaskEnvelope,
        payload,
        delivery: Delivery,
        attempt: int,
        delivery_attempt: int,
        execution: str,
        storage_retry,
        claimed: bool = False,
        isolated: bool = False,
        isolation: Isolation | None = None,
    ) -> None:
        self.task_type = task_type
        self.payload = payload
        self.envelope = envelope
        self.settings = settings
        self.isolated = isolated and isolation is not None
        self.isolation = isolation
        self.memory_mb = task_type.memory_mb or settings.task_memory_mb
        self.run_id = new_run_id(attempt)
        self.attempt = attempt
        self.claims = claims
        self.ctx = RunContext(
            settings=settings,
            bucket=bucket,
            task_id=envelope.task_id,
            run_id=self.run_id,
            attempt=attempt,
            time_limit=task_type.time_limit_seconds or settings.task_timeout_seconds,
            delivery_attempt=delivery_attempt,
            storage_retry=storage_retry,
            on_progress=lambda progress: claims.report_progress(self.run_id, progress),
            pinned_inputs=envelope.inputs,
        )
        self.claim = ClaimedRun(
            delivery=delivery,
            run_id=self.run_id,
            execution=execution,
            claim_at=time.monotonic() + CLAIM_DELAY_SECONDS,
            on_lost=self._lost,
            isolated=isolated,
            claimed=claimed,
        )

    def _lost(self, reason: str) -> None:
        # The claim could not be made or kept: the task was cancelled, another run holds it,
        # or it ended.
        if reason == "cancelled":
            log.info("run %s stops: the task was cancelled", self.run_id)
            self.ctx.stop(CANCELLED)
            return
        log.warning("run %s lost its claim (%s); stopping it", self.run_id, reason)
        self.ctx.stop(SUPERSEDED)

    def stop(self, reason: str = SHUTDOWN) -> None:
        """Ask the run to stop at its next check (shutdown, cancellation)."""
        self.ctx.stop(reason)

    @property
    def reservation_mb(self) -> int:
        """The memory this run holds while it runs (a child process costs its own too)."""
        return self.memory_mb + (CHILD_OVERHEAD_MB if self.isolated else 0)

    def execute(self) -> RunResult:
        """Run the handler (here, or isolated in a child) and classify how it ended."""
        started = time.monotonic()
        self.claims.watch(self.claim)
        if self.isolated:
            try:
                result = self._execute_isolated()
            finally:
                watched = self.claims.forget(self.run_id)
            result.claimed = bool(watched and watched.claimed)
            result.seconds = time.monotonic() - started
            return result
        try:
            self.task_type.handler(self.ctx, self.payload)
            # A handler that returns has finished its work, even if it was asked to stop
            # meanwhile (the commit decides whether it still counts); past its time limit
            # it has not finished in time.
            self.ctx.check_deadline()
            result = RunResult(
                RunEnd.SUCCEEDED, self.run_id, self.attempt, outputs=list(self.ctx.outputs.written)
            )
        except RunStopped as stopped:
            result = RunResult(
                RunEnd.STOPPED, self.run_id, self.attempt, stop_reason=stopped.reason
            )
        except Exception as exc:
            if self.ctx.stopped:
                # Whatever the handler raised after being told to stop is not its failure.
                result = RunResult(
                    RunEnd.STOPPED, self.run_id, self.attempt, stop_reason=self.ctx.stop_reason
                )
            else:
                failure = classify(exc, self.task_type.permanent_errors)
                result = RunResult(RunEnd.FAILED, self.run_id, self.attempt, failure=failure)
        finally:
            watched = self.claims.forget(self.run_id)
        result.claimed = bool(watched and watched.claimed)
        result.seconds = time.monotonic() - started
        return result

    def _execute_isolated(self) -> RunResult:
        spec = ChildSpec(
            settings=self.settings,
            task_type=self.task_type.name,
            payload=self.payload.model_dump(mode="json"),
            task_id=self.envelope.task_id,
            run_id=self.run_id,
            attempt=self.attempt,
            delivery_attempt=self.ctx.delivery_attempt,
            time_limit=self.ctx.time_limit,
            inputs=dict(self.envelope.inputs),
            memory_mb=self.memory_mb,
        )
        log.info("running the task isolated in a child process")
        outcome = self.isolation.run(
            spec,
            stopped=lambda: self.ctx.stopped,
            on_progress=lambda raw: self.claims.report_progress(
                self.run_id, Progress.model_validate(raw)
            ),
        )
        if outcome.end == "ok":
            return RunResult(
                RunEnd.SUCCEEDED, self.run_id, self.attempt, outputs=_outputs(outcome.outputs)
            )
        if outcome.end == "stopped" or self.ctx.stopped:
            reason = self.ctx.stop_reason or outcome.stop_reason or SHUTDOWN
            return RunResult(RunEnd.STOPPED, self.run_id, self.attempt, stop_reason=reason)
        return RunResult(RunEnd.FAILED, self.run_id, self.attempt, failure=outcome.failure)
