"""Checking jobs and RunJob overrides the way Cloud Run does, and filling its defaults."""

from __future__ import annotations

from dataclasses import dataclass

from devstack.jobs.wire import invalid, unsupported

# What Cloud Run sets in every task; a job or an override may not set them itself.
RESERVED_ENV = frozenset(
    {
        "CLOUD_RUN_JOB",
        "CLOUD_RUN_EXECUTION",
        "CLOUD_RUN_TASK_INDEX",
        "CLOUD_RUN_TASK_ATTEMPT",
        "CLOUD_RUN_TASK_COUNT",
    }
)
# Cloud Run's limits and defaults for jobs.
MAX_TASK_COUNT = 10_000
MAX_RETRIES = 10
DEFAULT_MAX_RETRIES = 3
DEFAULT_TIMEOUT_SECONDS = 600
MAX_TIMEOUT_SECONDS = 168 * 3600


@dataclass(frozen=True)
class RunSpec:
    """What one execution runs: the job's template with the RunJob overrides applied."""

    task_template: object  # run_v2 TaskTemplate (raw protobuf), as the Execution reports it
    task_count: int
    parallelism: int  # effective: between 1 and task_count
    max_retries: int
    timeout_seconds: float
    env: dict[str, str]

    @property
    def container(self):
        return self.task_template.containers[0]


def _seconds(duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _check_timeout(duration, field: str) -> None:
    seconds = _seconds(duration)
    if seconds <= 0 or seconds > MAX_TIMEOUT_SECONDS:
        raise invalid(f"{field} must be more than 0s and at most {MAX_TIMEOUT_SECONDS}s")


def _check_task_count(count: int, field: str) -> None:
    if count < 0 or count > MAX_TASK_COUNT:
        raise invalid(f"{field} must be between 1 and {MAX_TASK_COUNT}, not {count}")


def _check_env(env, field: str) -> None:
    for var in env:
        if not var.name or "=" in var.name:
            raise invalid(f"{field}: invalid environment variable name {var.name!r}")
        if var.name in RESERVED_ENV:
            raise invalid(
                f"{field}: {var.name} is a reserved environment variable name; "
                f"Cloud Run sets {', '.join(sorted(RESERVED_ENV))} itself"
            )
        if var.WhichOneof("values") == "value_source":
            raise unsupported(f"{field}: {var.name} takes its value from Secret Manager")


def normalized_job(job) -> object:
    """A copy of job checked as CreateJob/UpdateJob checks it, with Cloud Run's defaults filled."""
    job = type(job).FromString(job.SerializeToString())
    if not job.HasField("template") or not job.template.HasField("template"):
        raise invalid("job.template.template is required: it describes the tasks")
    execution = job.template
    task = execution.template
    if not task.containers:
        raise invalid("job.template.template.containers: a job runs exactly one container")
    if len(task.containers) > 1:
        raise unsupported("job.template.template.containers: sidecar containers")
    _check_env(task.containers[0].env, "job.template.template.containers[0].env")
    _check_task_count(execution.task_count, "job.template.task_count")
    if execution.task_count == 0:
        execution.task_count = 1
    if execution.parallelism < 0:
        raise invalid(f"job.template.parallelism must not be negative, not {execution.parallelism}")
    if not task.HasField("max_retries"):
        task.max_retries = DEFAULT_MAX_RETRIES
    if not 0 <= task.max_retries <= MAX_RETRIES:
        raise invalid(
            f"job.template.template.max_retries must be between 0 and {MAX_RETRIES}, "
            f"not {task.max_retries}"
        )
    if task.HasField("timeout"):
        _check_timeout(task.timeout, "job.template.template.timeout")
    else:
        task.timeout.seconds = DEFAULT_TIMEOUT_SECONDS
    return job


def run_spec(job, overrides) -> RunSpec:
    """The execution RunJob starts for job (already normalized) with overrides, checked."""
    task = type(job.template.template).FromString(job.template.template.SerializeToString())
    task_count = job.template.task_count
    if overrides is not None:
        # proto3 cannot tell 0 from unset: 0 keeps the job's task count, as on Cloud Run.
        _check_task_count(overrides.task_count, "overrides.task_count")
        task_count = overrides.task_count or task_count
        if overrides.HasField("timeout"):
            _check_timeout(overrides.timeout, "overrides.timeout")
            task.timeout.CopyFrom(overrides.timeout)
        _apply_container_overrides(task.containers[0], overrides.container_overrides)
    parallelism = job.template.parallelism or task_count
    env = {var.name: var.value for var in task.containers[0].env}
    return RunSpec(
        task_template=task,
        task_count=task_count,
        parallelism=min(parallelism, task_count),
        max_retries=task.max_retries,
        timeout_seconds=_seconds(task.timeout),
        env=env,
    )


def _apply_container_overrides(container, container_overrides) -> None:
    if len(container_overrides) > 1:
        raise invalid("overrides.container_overrides: the job has one container to override")
    if not container_overrides:
        return
    override = container_overrides[0]
    if override.name and override.name != container.name:
        raise invalid(
            f"overrides.container_overrides[0].name {override.name!r} names no container "
            f"of the job (its container is {container.name or 'unnamed'!r})"
        )
    if override.clear_args and override.args:
        raise invalid("overrides.container_overrides[0]: clear_args and args contradict each other")
    _check_env(override.env, "overrides.container_overrides[0].env")
    if override.clear_args:
        del container.args[:]
    elif override.args:
        container.args[:] = list(override.args)
    merged = {var.name: var.value for var in container.env}
    merged.update({var.name: var.value for var in override.env})
    del container.env[:]
    for name, value in merged.items():
        container.env.add(name=name, value=value)
