"""google.longrunning operations: CreateJob's, UpdateJob's and DeleteJob's are done at once;
RunJob's and CancelExecution's when their execution is (RunJob's fails if it failed)."""

from __future__ import annotations

import threading
import time

from google.rpc import code_pb2, status_pb2

from devstack.jobs import names
from devstack.jobs import wire as w
from devstack.jobs.paging import page
from devstack.jobs.records import ExecutionRecord, OperationRecord, copy
from devstack.jobs.wire import invalid, not_found


class Operations:
    """The operations, guarded by the store's lock, whose notify wakes WaitOperation."""

    def __init__(self, lock: threading.Condition) -> None:
        self._lock = lock
        self._records: dict[str, OperationRecord] = {}

    def add(self, parent: str, execution: ExecutionRecord, *, fails_with_execution=False):
        """A new operation that follows execution; its message."""
        record = OperationRecord(
            names.new_operation(parent),
            execution=execution,
            fails_with_execution=fails_with_execution,
        )
        execution.operations.append(record.name)
        return self._keep(record)

    def finished(self, parent: str, resource):
        """A new operation, done at once, whose response is resource; its message."""
        return self._keep(OperationRecord(names.new_operation(parent), snapshot=copy(resource)))

    def _keep(self, record: OperationRecord):
        with self._lock:
            self._records[record.name] = record
            return self._message(record)

    def forget(self, operation_names) -> None:
        with self._lock:
            for name in operation_names:
                self._records.pop(name, None)

    def _message(self, record: OperationRecord):
        if record.execution is not None:
            resource = copy(record.execution.execution)
            done = record.execution.done
        else:
            resource, done = record.snapshot, True
        operation = w.Operation(name=record.name, done=done)
        operation.metadata.Pack(resource)
        if not done:
            return operation
        progress = record.execution.progress if record.execution else None
        if record.fails_with_execution and progress.failure and not progress.cancelling:
            operation.error.CopyFrom(
                status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=progress.failure)
            )
        else:
            operation.response.Pack(resource)
        return operation

    def _record(self, name: str) -> OperationRecord:
        names.operation(name)
        record = self._records.get(name)
        if record is None:
            raise not_found("operation", name)
        return record

    def get(self, name: str):
        with self._lock:
            return self._message(self._record(name))

    def list(self, request):
        parent = names.location(request.name)
        if request.filter:
            raise invalid("filter is not supported")
        with self._lock:
            records = sorted(
                (r for n, r in self._records.items() if n.startswith(parent + "/operations/")),
                key=lambda r: r.name,
            )
            found, token = page(records, lambda r: r.name, request, parent)
            return w.ListOperationsResponse(
                operations=[self._message(r) for r in found], next_page_token=token
            )

    def delete(self, name: str) -> None:
        with self._lock:
            self._record(name)
            del self._records[name]

    def wait(self, name: str, timeout: float):
        """The operation once done, or as it is when timeout (seconds) passes."""
        deadline = time.monotonic() + timeout
        with self._lock:
            record = self._record(name)
            while record.execution is not None and not record.execution.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            return self._message(record)
