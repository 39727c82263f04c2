"""Running one task in a child process, where it can be measured and stopped.

Tasks normally run on threads of the execution. A task whose previous run died with its
execution (its claim expired unsettled: a crash, an OOM kill, a SIGKILL) may have been the
killer, so its next runs are isolated here, as are task types declared `@task(isolated=True)`:

- the child's resident memory is watched; past the task's memory budget it is killed and
  the run fails as `resource_exhausted` (its own failure, retried until its attempts run out);
  its address space is capped too, so one huge allocation is a MemoryError, not an OOM kill of
  the whole container;
- past its time limit it is killed (CPU-bound code that never checks its deadline stops too);
- a stop (shutdown, superseded) is passed on, then enforced with SIGKILL after a grace period.

Tasks beside it run on, whatever it does. Children come from a forkserver that has imported
the task modules once, so starting one costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import time
from dataclasses import dataclass
from typing import Any

from background_worker.memory import CHILD_OVERHEAD_MB, MIB, resident_bytes
from taskcore.failures import Failure, Kind

log = logging.getLogger(__name__)

# After a stop is asked for, how long the child may take to notice before it is killed.
STOP_GRACE_SECONDS = 3.0
# A child past its time limit is killed after this much more.
KILL_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.02
# Address space the child may map beyond its RSS budget: thread stacks and mapped libraries
# count here though they are mostly untouched.
ADDRESS_SPACE_SLACK_BYTES = 256 * MIB


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs to run one task (picklable)."""

    settings: Any
    task_type: str
    payload: dict
    task_id: str
    run_id: str
    attempt: int
    delivery_attempt: int
    time_limit: float
    inputs: dict
    memory_mb: int


@dataclass
class ChildOutcome:
    """What came of the child: ("ok", outputs) / ("failed", Failure) / ("stopped", reason)."""

    end: str
    outputs: list | None = None
    failure: Failure | None = None
    stop_reason: str | None = None


def _child_main(spec: ChildSpec, conn, stop) -> None:
    """The child: run the task's handler and send back how it ended."""
    from taskcore.clients import bucket as make_bucket
    from taskcore.clients import storage_client, storage_retry
    from taskcore.context import RunContext, RunStopped
    from taskcore.failures import classify
    from taskcore.logs import configure_logging, task_context
    from taskcore.tasks import load_task_modules

    _cap_address_space(spec.memory_mb)
    settings = spec.settings
    configure_logging(settings.log_level, fixed_fields=settings.execution_labels())
    task_type = load_task_modules(settings.task_modules).get(spec.task_type)
    storage = storage_client(settings, pool_size=4)

    class ChildContext(RunContext):
        def check_alive(self) -> None:
            if stop.is_set() and not self.stopped:
                self.stop("shutdown")
            super().check_alive()

    ctx = ChildContext(
        settings=settings,
        bucket=make_bucket(settings, storage),
        task_id=spec.task_id,
        run_id=spec.run_id,
        attempt=spec.attempt,
        time_limit=spec.time_limit,
        delivery_attempt=spec.delivery_attempt,
        storage_retry=storage_retry(settings),
        on_progress=lambda progress: conn.send(("progress", progress.model_dump(mode="json"))),
        pinned_inputs=spec.inputs,
    )
    with task_context(task_id=spec.task_id, task_type=spec.task_type, isolated=True):
        try:
            payload = task_type.payload_model.model_validate(spec.payload)
            task_type.handler(ctx, payload)
            ctx.check_deadline()
            message = ("ok", [ref.model_dump(mode="json") for ref in ctx.outputs.written])
        except RunStopped as stopped:
            message = ("stopped", stopped.reason)
        except BaseException as exc:  # noqa: BLE001 - whatever the task did, report it
            failure = classify(exc, task_type.permanent_errors)
            message = ("failed", failure.kind.value, failure.error_type, failure.message)
    conn.send(message)
    conn.close()


def _cap_address_space(memory_mb: int) -> None:
    """Cap what the child may map: its RSS budget plus what it has mapped already, plus slack."""
    try:
        with open("/proc/self/status") as status:
            mapped = next(
                int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize")
            )
    except (OSError, StopIteration, ValueError):
        return
    limit = mapped + memory_mb * MIB + ADDRESS_SPACE_SLACK_BYTES
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or limit <= hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class Isolation:
    """Starts isolated runs for one execution (the forkserver is made on first use)."""

    def __init__(self, task_modules: tuple[str, ...]) -> None:
        self._context = None
        self._modules = task_modules

    def _mp(self):
        if self._context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["background_worker.isolation", *self._modules])
            self._context = context
        return self._context

    def run(self, spec: ChildSpec, *, stopped, on_progress) -> ChildOutcome:
        """Run spec in a child until it ends; `stopped()` says when to stop it."""
        mp = self._mp()
        receiver, sender = mp.Pipe(duplex=False)
        stop = mp.Event()
        child = mp.Process(target=_child_main, args=(spec, sender, stop), daemon=True)
        child.start()
        sender.close()
        try:
            return self._watch(child, receiver, stop, spec, stopped, on_progress)
        finally:
            if child.is_alive():
                child.kill()
            child.join(5)
            receiver.close()

    def _watch(self, child, receiver, stop, spec, stopped, on_progress) -> ChildOutcome:
        budget = (spec.memory_mb + CHILD_OVERHEAD_MB) * MIB
        deadline = time.monotonic() + spec.time_limit + KILL_GRACE_SECONDS
        stop_sent: float | None = None
        peak = 0
        while True:
            if receiver.poll(POLL_SECONDS):
                try:
                    message = receiver.recv()
                except EOFError:
                    # The child is gone without a result (a crash, the OOM killer). A closed
                    # pipe stays readable, so this is the only place that can tell.
                    child.join(KILL_GRACE_SECONDS)
                    return _died(child.exitcode, peak, budget)
                if message[0] == "progress":
                    on_progress(message[1])
                    continue
                return _outcome(message)
            if not child.is_alive() and not receiver.poll(0):
                return _died(child.exitcode, peak, budget)
            peak = max(peak, resident_bytes(child.pid))
            if peak > budget:
                _kill(child)
                return _resource_exhausted(f"it used over {budget // MIB} MiB (its budget)")
            now = time.monotonic()
            if now > deadline:
                _kill(child)
                return ChildOutcome(
                    "failed",
                    failure=Failure(
                        Kind.TRANSIENT,
                        "timeout",
                        f"task exceeded its time limit of {spec.time_limit:g}s (killed)",
                    ),
                )
            if stopped() and stop_sent is None:
                stop.set()
                stop_sent = now
            if stop_sent is not None and now - stop_sent > STOP_GRACE_SECONDS:
                _kill(child)
                return ChildOutcome("stopped", stop_reason="shutdown")


def _kill(child) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGKILL)
    child.join(5)


def _outcome(message) -> ChildOutcome:
    kind = message[0]
    if kind == "ok":
        return ChildOutcome("ok", outputs=message[1])
    if kind == "stopped":
        return ChildOutcome("stopped", stop_reason=message[1])
    return ChildOutcome("failed", failure=Failure(Kind(message[1]), message[2], message[3]))


def _resource_exhausted(why: str) -> ChildOutcome:
    return ChildOutcome(
        "failed",
        failure=Failure(Kind.TRANSIENT, "resource_exhausted", f"the task was stopped: {why}"),
    )


def _died(exitcode: int | None, peak: int, budget: int) -> ChildOutcome:
    if exitcode == -signal.SIGKILL:
        # Not killed by us: the kernel's OOM killer is the one that sends SIGKILL.
        return _resource_exhausted(
            f"its process was killed (SIGKILL) at {peak // MIB} MiB, most likely out of memory"
        )
    return ChildOutcome(
        "failed",
        failure=Failure(
            Kind.TRANSIENT, "crashed", f"its process ended with exit code {exitcode} and no result"
        ),
    )
