"""What the stand-in keeps of an execution and of a long-running operation."""

from __future__ import annotations

from dataclasses import dataclass, field

from devstack.jobs.supervisor import ExecutionRunner, Progress


def copy(message):
    """An independent copy of a protobuf message (answers never share the kept ones)."""
    return type(message).FromString(message.SerializeToString())


@dataclass(eq=False)
class ExecutionRecord:
    """An execution: its resource (kept current) and the runner behind it."""

    execution: object  # run_v2 Execution (raw protobuf)
    job_name: str
    order: int
    runner: ExecutionRunner | None = None
    progress: Progress = field(default_factory=Progress)
    operations: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.execution.HasField("completion_time")


@dataclass(eq=False)
class OperationRecord:
    """A long-running operation: finished at once (jobs) or when its execution ends."""

    name: str
    snapshot: object | None = None  # the finished resource, for operations done at once
    execution: ExecutionRecord | None = None
    # RunJob's operation fails when its execution fails; CancelExecution's does not.
    fails_with_execution: bool = False
