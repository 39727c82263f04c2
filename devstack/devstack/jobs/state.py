"""Jobs and their executions, in memory, and the operations that report on them.

One lock guards everything; execution runners report progress through it and every change
wakes WaitOperation callers. Nothing is kept across restarts: the dev stack defines its jobs
afresh each time, as `terraform apply` would.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import grpc
from google.api import launch_stage_pb2

from devstack.jobs import names
from devstack.jobs import wire as w
from devstack.jobs.conditions import execution_conditions
from devstack.jobs.defaults import CLOUD_RUN_TERM_GRACE
from devstack.jobs.operations import Operations
from devstack.jobs.paging import page
from devstack.jobs.records import ExecutionRecord, copy
from devstack.jobs.supervisor import ExecutionPlan, ExecutionRunner, Progress
from devstack.jobs.validation import normalized_job, run_spec
from devstack.jobs.wire import ApiError, invalid, not_found

# Finished executions kept per job (with their operations); older ones are forgotten, so a
# dev stack that runs executions all day keeps a bounded history. Their log files stay.
KEEP_EXECUTIONS = 1000


def _now_stamp():
    return w.timestamp(time.time())


def _etag() -> str:
    return uuid.uuid4().hex


class Store:
    """What the Jobs, Executions and Operations services read and change."""

    def __init__(
        self,
        work_dir: Path,
        *,
        term_grace: float = CLOUD_RUN_TERM_GRACE,
        keep_executions: int = KEEP_EXECUTIONS,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.term_grace = term_grace
        self.keep_executions = keep_executions
        # Re-entrant: store methods holding it call into the operations, which take it too.
        self._lock = threading.Condition(threading.RLock())
        self._jobs: dict[str, object] = {}
        self._executions: dict[str, ExecutionRecord] = {}
        self.operations = Operations(self._lock)
        self._order = 0
        self._closed = False
        # Every runner still running, deleted executions' too: stopping waits for all of them.
        self._runners: list[ExecutionRunner] = []

    # Jobs

    def create_job(self, request):
        parent = names.location(request.parent)
        job_id = names.check_job_id(request.job_id)
        name = f"{parent}/jobs/{job_id}"
        if request.job.name and request.job.name != name:
            raise invalid(f"job.name must be empty or {name!r}, not {request.job.name!r}")
        job = normalized_job(request.job)
        with self._lock:
            if name in self._jobs:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"job {name!r} already exists")
            job.name = name
            self._fill_new_job(job)
            if not request.validate_only:
                self._jobs[name] = job
            return self.operations.finished(parent, job)

    def _fill_new_job(self, job) -> None:
        now = _now_stamp()
        job.uid = str(uuid.uuid4())
        job.generation = job.observed_generation = 1
        job.create_time.CopyFrom(now)
        job.update_time.CopyFrom(now)
        job.etag = _etag()
        if not job.launch_stage:
            job.launch_stage = launch_stage_pb2.GA
        job.reconciling = False
        job.terminal_condition.CopyFrom(
            w.Condition(type_="Ready", state=w.State.CONDITION_SUCCEEDED, last_transition_time=now)
        )

    def get_job(self, name: str):
        names.job(name)
        with self._lock:
            return copy(self._job(name))

    def _job(self, name: str):
        job = self._jobs.get(name)
        if job is None:
            raise not_found("job", name)
        return job

    def list_jobs(self, request):
        parent = names.location(request.parent)
        with self._lock:
            jobs = sorted(
                (j for n, j in self._jobs.items() if n.startswith(parent + "/jobs/")),
                key=lambda j: j.name,
            )
            found, token = page(jobs, lambda j: j.name, request, parent)
            return w.ListJobsResponse(jobs=[copy(j) for j in found], next_page_token=token)

    def update_job(self, request):
        parent, job_id = names.job(request.job.name)
        job = normalized_job(request.job)
        with self._lock:
            current = self._jobs.get(job.name)
            if current is None:
                if not request.allow_missing:
                    raise not_found("job", job.name)
                names.check_job_id(job_id)
                self._fill_new_job(job)
            else:
                _check_etag(job.etag, current)
                job.uid = current.uid
                job.create_time.CopyFrom(current.create_time)
                job.execution_count = current.execution_count
                if current.HasField("latest_created_execution"):
                    job.latest_created_execution.CopyFrom(current.latest_created_execution)
                job.launch_stage = job.launch_stage or current.launch_stage
                job.generation = job.observed_generation = current.generation + 1
                job.update_time.CopyFrom(_now_stamp())
                job.etag = _etag()
                job.terminal_condition.CopyFrom(current.terminal_condition)
            if not request.validate_only:
                self._jobs[job.name] = job
            return self.operations.finished(parent, job)

    def delete_job(self, request):
        parent, _ = names.job(request.name)
        with self._lock:
            job = self._job(request.name)
            _check_etag(request.etag, job)
            if request.validate_only:
                return self.operations.finished(parent, job)
            # Its executions go with it; running ones are stopped as CancelExecution would.
            for record in self._job_executions(request.name):
                self._forget_execution(record)
            del self._jobs[request.name]
            job.delete_time.CopyFrom(_now_stamp())
            return self.operations.finished(parent, job)

    # Executions

    def run_job(self, request):
        parent, job_id = names.job(request.name)
        overrides = request.overrides if request.HasField("overrides") else None
        with self._lock:
            if self._closed:
                raise ApiError(grpc.StatusCode.UNAVAILABLE, "the stand-in is stopping")
            job = self._job(request.name)
            _check_etag(request.etag, job)
            spec = run_spec(job, overrides)
            execution_id = names.new_execution_id(job_id)
            while f"{request.name}/executions/{execution_id}" in self._executions:
                execution_id = names.new_execution_id(job_id)
            name = f"{request.name}/executions/{execution_id}"
            log_path = self.work_dir.joinpath("logs", *name.split("/")[1::2]).with_suffix(".log")
            execution = self._new_execution(job, name, spec, log_path)
            if request.validate_only:
                return self.operations.finished(parent, execution)
            self._order += 1
            record = ExecutionRecord(execution, request.name, self._order)
            plan = ExecutionPlan(job_id, execution_id, spec, log_path)
            try:
                record.runner = ExecutionRunner(
                    plan, lambda p: self._progress(record, p), term_grace=self.term_grace
                )
            except OSError as exc:
                raise ApiError(
                    grpc.StatusCode.INTERNAL, f"cannot write the execution's log: {exc}"
                ) from exc
            self._executions[name] = record
            job.execution_count += 1
            job.latest_created_execution.CopyFrom(
                w.ExecutionReference(
                    name=name,
                    create_time=execution.create_time,
                    completion_status=w.CompletionStatus.EXECUTION_RUNNING,
                )
            )
            operation = self.operations.add(parent, record, fails_with_execution=True)
            record.runner.start()
            self._runners = [r for r in self._runners if r.is_alive()] + [record.runner]
            self._forget_old_executions(request.name)
            return operation

    def _new_execution(self, job, name: str, spec, log_path: Path):
        now = _now_stamp()
        execution = w.Execution(
            name=name,
            uid=str(uuid.uuid4()),
            generation=1,
            observed_generation=1,
            launch_stage=job.launch_stage,
            job=names.job(job.name)[1],
            task_count=spec.task_count,
            parallelism=spec.parallelism,
            reconciling=True,
            log_uri=log_path.resolve().as_uri(),
            etag=_etag(),
            create_time=now,
            update_time=now,
        )
        execution.labels.update(job.template.labels)
        execution.annotations.update(job.template.annotations)
        execution.template.CopyFrom(spec.task_template)
        execution.conditions.extend(execution_conditions(execution, Progress()))
        return execution

    def _progress(self, record: ExecutionRecord, progress: Progress) -> None:
        """A runner's report: bring the execution (and its job's reference) up to date."""
        with self._lock:
            execution = record.execution
            record.progress = progress
            execution.running_count = progress.running
            execution.succeeded_count = progress.succeeded
            execution.failed_count = progress.failed
            execution.cancelled_count = progress.cancelled
            execution.retried_count = progress.retried
            if progress.start_time is not None and not execution.HasField("start_time"):
                execution.start_time.CopyFrom(w.timestamp(progress.start_time))
            if progress.done:
                execution.completion_time.CopyFrom(w.timestamp(progress.completion_time))
                execution.reconciling = False
            conditions = execution_conditions(execution, progress)
            del execution.conditions[:]
            execution.conditions.extend(conditions)
            execution.update_time.CopyFrom(_now_stamp())
            job = self._jobs.get(record.job_name)
            if progress.done and job is not None:
                latest = job.latest_created_execution
                if latest.name == execution.name:
                    latest.completion_time.CopyFrom(execution.completion_time)
                    latest.completion_status = _completion_status(progress)
            self._lock.notify_all()

    def get_execution(self, name: str):
        names.execution(name)
        with self._lock:
            return copy(self._execution(name).execution)

    def _execution(self, name: str) -> ExecutionRecord:
        record = self._executions.get(name)
        if record is None:
            raise not_found("execution", name)
        return record

    def _job_executions(self, job_name: str) -> list[ExecutionRecord]:
        return [r for r in self._executions.values() if r.job_name == job_name]

    def list_executions(self, request):
        parent, job_id = names.job(request.parent)
        with self._lock:
            if job_id == names.ANY_JOB:
                prefix = parent + "/jobs/"
                records = [r for r in self._executions.values() if r.job_name.startswith(prefix)]
            else:
                self._job(request.parent)
                records = self._job_executions(request.parent)
            records.sort(key=lambda r: -r.order)  # newest first, as Cloud Run lists them
            found, token = page(records, lambda r: -r.order, request, request.parent)
            return w.ListExecutionsResponse(
                executions=[copy(r.execution) for r in found], next_page_token=token
            )

    def cancel_execution(self, request):
        with self._lock:
            parent, record = self._execution_to_change(request)
            if record.done:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"execution {request.name!r} has already completed",
                )
            if not request.validate_only:
                record.runner.cancel()
            return self.operations.add(parent, record)

    def delete_execution(self, request):
        with self._lock:
            parent, record = self._execution_to_change(request)
            snapshot = copy(record.execution)
            if not request.validate_only:
                self._forget_execution(record)
                snapshot.delete_time.CopyFrom(_now_stamp())
            return self.operations.finished(parent, snapshot)

    def _execution_to_change(self, request) -> tuple[str, ExecutionRecord]:
        """The operations' parent and the execution a Cancel or Delete request names."""
        job_name, _ = names.execution(request.name)
        parent, _ = names.job(job_name)
        record = self._execution(request.name)
        _check_etag(request.etag, record.execution)
        return parent, record

    def _forget_execution(self, record: ExecutionRecord, *, operations: bool = False) -> None:
        """Drop an execution (stopping it first), and with operations its operations too;
        a deleted one's operations still answer, as its runner still finishes it."""
        if not record.done:
            record.runner.cancel()
        del self._executions[record.execution.name]
        if operations:
            self.operations.forget(record.operations)

    def _forget_old_executions(self, job_name: str) -> None:
        finished = sorted(
            (r for r in self._job_executions(job_name) if r.done), key=lambda r: r.order
        )
        for record in finished[: max(0, len(finished) - self.keep_executions)]:
            self._forget_execution(record, operations=True)

    # Stopping

    def shutdown(self) -> bool:
        """Refuse new executions, stop every running one, wait for their processes to be gone.

        Whether all are gone (each gets the term grace, then SIGKILL).
        """
        with self._lock:
            self._closed = True
            runners = list(self._runners)
        for runner in runners:
            runner.cancel()
        deadline = time.monotonic() + self.term_grace + 5
        return all(runner.join(max(0.0, deadline - time.monotonic())) for runner in runners)


def _check_etag(given: str, resource) -> None:
    """ABORTED if the caller read resource before its last change (an empty etag: no check)."""
    if given and given != resource.etag:
        raise ApiError(
            grpc.StatusCode.ABORTED,
            f"etag {given!r} is not {resource.name!r}'s current one: it changed since it was read",
        )


def _completion_status(progress: Progress):
    if progress.cancelling:
        return w.CompletionStatus.EXECUTION_CANCELLED
    if progress.failed:
        return w.CompletionStatus.EXECUTION_FAILED
    return w.CompletionStatus.EXECUTION_SUCCEEDED
