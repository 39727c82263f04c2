"""The campaign's task types: each has an end known from its payload alone.

Run the API and the workers with TASK_MODULES=example_tasks,chaos.tasks. Every type that
succeeds writes `parts` outputs part-<i>.json, each naming the run that wrote it (the
OutputWriter's run id, also the object's prefix) and the SHA-256 of the payload, so the
checker can prove that a succeeded record names one run's complete set:

- chaos_quick: writes its parts at once;
- chaos_sleepy: sleeps `seconds` between its parts (some longer than the ack deadline);
- chaos_flaky: fails transiently on its first `fail_first` attempts (at most 3), then succeeds;
- chaos_always_transient: always fails transiently (DLQ after MAX_DELIVERY_ATTEMPTS failures);
- chaos_permanent: fails permanently (DLQ at once);
- chaos_data_error: its own data overflows a float (DLQ at once as `data_error`);
- chaos_cpu: burns CPU calling ctx.check_alive(); past its time limit it times out;
- chaos_memory_hog: allocates more than any budget (DLQ as `resource_exhausted`).

The failing types take a field a `taskctl dlq replay --set` can change (`fail=false`, or a
small `exponent`), after which they succeed: a replacement task's end is known too.
`expected_end(task_type, fields)` says how any task (built-in types included) must end.

This module imports only taskcore: the worker loads it like any task module.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from taskcore import PermanentTaskError, TaskContext, TaskPayload, TransientTaskError, task

# Tags name the campaign's submissions ("s<seed>-<index>"); the checker maps outputs and dead
# letters of tasks the API never answered for back to what was submitted.
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,80}$"
MAX_PARTS = 8
# Generous against the faults: a blackholed write waits up to 30 s, then goes through.
QUICK_TIME_LIMIT = 60.0
SLEEPY_TIME_LIMIT = 90.0
# Short, so a task asked to overrun it costs little CPU (MAX_DELIVERY_ATTEMPTS runs of it).
CPU_TIME_LIMIT = 8.0
MEMORY_HOG_TIME_LIMIT = 60.0
# float() of an int past 10**308 overflows.
FLOAT_MAX_EXPONENT = 308
MIB = 1024 * 1024


class ChaosFlakyError(TransientTaskError):
    """Raised by chaos_flaky on each of its first `fail_first` attempts."""

    error_type = "chaos_flaky"


class ChaosTransientError(TransientTaskError):
    """Raised by chaos_always_transient on every attempt."""

    error_type = "chaos_transient"


class ChaosPermanentError(PermanentTaskError):
    """Raised by chaos_permanent: no retry can help."""

    error_type = "chaos_permanent"


class ChaosPayload(TaskPayload):
    """What every chaos task carries: the campaign's tag, and how many outputs to write."""

    tag: str = Field(..., pattern=TAG_PATTERN, description="The campaign's submission tag.")
    parts: int = Field(2, ge=1, le=MAX_PARTS, description="Outputs a success writes.")


class QuickPayload(ChaosPayload):
    """Write the parts at once."""


class SleepyPayload(ChaosPayload):
    """Sleep `seconds` in all, spread between the parts."""

    seconds: float = Field(..., ge=0, le=SLEEPY_TIME_LIMIT / 2)


class FlakyPayload(ChaosPayload):
    """Fail transiently on attempts 1..fail_first; `seconds` pass first, so the run claims."""

    fail_first: int = Field(..., ge=0, le=3)
    seconds: float = Field(1.5, ge=0, le=10)


class FailingPayload(ChaosPayload):
    """A task that fails until a replay sets fail=false."""

    fail: bool = True


class DataErrorPayload(ChaosPayload):
    """float(10 ** exponent): overflows past 10**308 (a replay may set a small exponent)."""

    exponent: int = Field(..., ge=0, le=100_000)


class CpuPayload(ChaosPayload):
    """Burn CPU for `seconds` (past CPU_TIME_LIMIT it times out)."""

    seconds: float = Field(..., ge=0, le=120)


class MemoryHogPayload(ChaosPayload):
    """Allocate `megabytes`, a chunk at a time, holding all of it."""

    megabytes: int = Field(..., ge=1, le=64 * 1024)
    chunk_megabytes: int = Field(16, ge=1, le=1024)


def canonical_payload(payload: TaskPayload | Mapping[str, Any]) -> dict[str, Any]:
    """The payload as JSON values, every field present (defaults included)."""
    if isinstance(payload, TaskPayload):
        return payload.model_dump(mode="json")
    return dict(payload)


def payload_hash(payload: TaskPayload | Mapping[str, Any]) -> str:
    """SHA-256 of the canonical payload: equal for the payload a task was submitted with and
    the one its handler ran with."""
    text = json.dumps(canonical_payload(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def part_name(index: int) -> str:
    return f"part-{index}.json"


def write_parts(ctx: TaskContext, task_type: str, payload: ChaosPayload, **extra: Any) -> None:
    """Write the payload's parts, each saying which run wrote it and for which payload."""
    for index in range(payload.parts):
        _write_part(ctx, task_type, payload, index, extra)


def _write_part(
    ctx: TaskContext, task_type: str, payload: ChaosPayload, index: int, extra: dict[str, Any]
) -> None:
    ctx.outputs.write_json(
        part_name(index),
        {
            "task_id": ctx.task_id,
            "task_type": task_type,
            "tag": payload.tag,
            "run_id": ctx.outputs.run_id,
            "attempt": ctx.attempt,
            "part": index,
            "parts": payload.parts,
            "payload_hash": payload_hash(payload),
            "payload": canonical_payload(payload),
            **extra,
        },
    )


@task("chaos_quick", time_limit=QUICK_TIME_LIMIT)
def chaos_quick(ctx: TaskContext, payload: QuickPayload) -> None:
    """Write the parts at once."""
    write_parts(ctx, "chaos_quick", payload)


@task("chaos_sleepy", time_limit=SLEEPY_TIME_LIMIT)
def chaos_sleepy(ctx: TaskContext, payload: SleepyPayload) -> None:
    """Sleep between the parts: a run that may outlast the ack deadline and its claim's lease."""
    pause = payload.seconds / payload.parts
    for index in range(payload.parts):
        ctx.sleep(pause)
        ctx.progress((index + 1) / payload.parts)
        _write_part(ctx, "chaos_sleepy", payload, index, {})


@task("chaos_flaky", time_limit=QUICK_TIME_LIMIT)
def chaos_flaky(ctx: TaskContext, payload: FlakyPayload) -> None:
    """Fail transiently on the first fail_first attempts, then succeed."""
    # Waiting first lets the run claim the task (after a second), so no other delivery runs
    # it meanwhile and each failure has an attempt number of its own.
    ctx.sleep(payload.seconds)
    if ctx.attempt <= payload.fail_first:
        raise ChaosFlakyError(f"attempt {ctx.attempt} of {payload.fail_first} that fail")
    write_parts(ctx, "chaos_flaky", payload)


@task("chaos_always_transient", time_limit=QUICK_TIME_LIMIT)
def chaos_always_transient(ctx: TaskContext, payload: FailingPayload) -> None:
    """Fail transiently on every attempt (unless fail=false)."""
    if payload.fail:
        raise ChaosTransientError(f"attempt {ctx.attempt} fails, as every attempt does")
    write_parts(ctx, "chaos_always_transient", payload)


@task("chaos_permanent", time_limit=QUICK_TIME_LIMIT)
def chaos_permanent(ctx: TaskContext, payload: FailingPayload) -> None:
    """Fail permanently (unless fail=false)."""
    if payload.fail:
        raise ChaosPermanentError("this task can never succeed")
    write_parts(ctx, "chaos_permanent", payload)


@task("chaos_data_error", time_limit=QUICK_TIME_LIMIT)
def chaos_data_error(ctx: TaskContext, payload: DataErrorPayload) -> None:
    """Convert 10**exponent to a float: an OverflowError of the task's own data past 10**308."""
    value = float(10**payload.exponent)
    write_parts(ctx, "chaos_data_error", payload, value=value)


@task("chaos_cpu", time_limit=CPU_TIME_LIMIT)
def chaos_cpu(ctx: TaskContext, payload: CpuPayload) -> None:
    """Hash in a tight loop for `seconds`, checking the time limit between rounds."""
    digest = payload.tag.encode()
    rounds = 0
    end = time.monotonic() + payload.seconds
    while time.monotonic() < end:
        for _ in range(200):
            digest = hashlib.sha256(digest).digest()
        rounds += 1
        ctx.check_alive()
    write_parts(ctx, "chaos_cpu", payload, rounds=rounds, digest=digest.hex())


@task("chaos_memory_hog", time_limit=MEMORY_HOG_TIME_LIMIT)
def chaos_memory_hog(ctx: TaskContext, payload: MemoryHogPayload) -> None:
    """Allocate `megabytes`, every page written, and hold it until the end."""
    held = []
    chunk = payload.chunk_megabytes * MIB
    for _ in range(0, payload.megabytes, payload.chunk_megabytes):
        block = bytearray(chunk)
        for offset in range(0, chunk, 4096):
            block[offset] = 1
        held.append(block)
        ctx.check_alive()
    write_parts(
        ctx, "chaos_memory_hog", payload, held_megabytes=len(held) * payload.chunk_megabytes
    )


# --- how each task must end -----------------------------------------------------------------

SUCCEEDED = "succeeded"
DEAD_LETTERED = "dead_lettered"

CHAOS_TYPES = {
    "chaos_quick": QuickPayload,
    "chaos_sleepy": SleepyPayload,
    "chaos_flaky": FlakyPayload,
    "chaos_always_transient": FailingPayload,
    "chaos_permanent": FailingPayload,
    "chaos_data_error": DataErrorPayload,
    "chaos_cpu": CpuPayload,
    "chaos_memory_hog": MemoryHogPayload,
}
BUILTIN_TYPES = ("file_processing", "data_transformation")


@dataclass(frozen=True)
class Expected:
    """How a task must end: succeeded, or dead-lettered with its own error_type after exactly
    `failures` failed runs (None: not checked)."""

    end: str
    error_type: str | None = None
    failures: int | None = None

    def describe(self) -> str:
        if self.end == SUCCEEDED:
            return SUCCEEDED
        count = f" after {self.failures} failures" if self.failures is not None else ""
        return f"{DEAD_LETTERED} ({self.error_type}{count})"


def parse_chaos_payload(task_type: str, fields: Mapping[str, Any]) -> ChaosPayload:
    """The chaos type's payload model for fields (ValueError if they do not fit it)."""
    return CHAOS_TYPES[task_type].model_validate(dict(fields))


def expected_end(task_type: str, fields: Mapping[str, Any], max_failures: int) -> Expected:
    """How a task of task_type with these payload fields must end.

    max_failures is MAX_DELIVERY_ATTEMPTS: a transient failure dead-letters on that failure.
    """
    if task_type in BUILTIN_TYPES:
        return Expected(SUCCEEDED)
    if task_type not in CHAOS_TYPES:
        raise ValueError(f"no expectation for task type {task_type!r}")
    payload = parse_chaos_payload(task_type, fields)
    if task_type == "chaos_always_transient" and payload.fail:
        return Expected(DEAD_LETTERED, ChaosTransientError.error_type, max_failures)
    if task_type == "chaos_permanent" and payload.fail:
        return Expected(DEAD_LETTERED, ChaosPermanentError.error_type, 1)
    if task_type == "chaos_data_error" and payload.exponent > FLOAT_MAX_EXPONENT:
        return Expected(DEAD_LETTERED, "data_error", 1)
    if task_type == "chaos_cpu" and payload.seconds >= CPU_TIME_LIMIT:
        return Expected(DEAD_LETTERED, "timeout", max_failures)
    if task_type == "chaos_memory_hog":
        return Expected(DEAD_LETTERED, "resource_exhausted")
    return Expected(SUCCEEDED)


# What a --set replay changes so that a failing task succeeds as its replacement.
HEALING_SETS: dict[str, tuple[tuple[str, Any], ...]] = {
    "chaos_always_transient": (("fail", False),),
    "chaos_permanent": (("fail", False),),
    "chaos_data_error": (("exponent", 2),),
    "chaos_cpu": (("seconds", 0.05),),
}
