"""Settings: every environment variable the pipeline reads, read here and nowhere else.

The recipe's names (GOOGLE_CLOUD_PROJECT, TOPIC_NAME, SUBSCRIPTION_NAME, BUCKET_NAME,
MAX_MESSAGES, PORT) are kept so existing deployments carry over. Every default works
locally with no variable set. Nothing is read at import time: call `Settings.from_env()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskcore.errors import ConfigurationError

Scope = Literal["api", "worker", "both", "local"]

# The queue of task types that name none; it keeps TOPIC_NAME and SUBSCRIPTION_NAME.
DEFAULT_QUEUE = "default"


def _env(name: str, default, scope: Scope, description: str, **constraints):
    """Declare one setting: its environment variable, default, who reads it, and why."""
    return Field(
        default,
        alias=name,
        description=description,
        json_schema_extra={"scope": scope},
        **constraints,
    )


class Settings(BaseModel):
    """The typed configuration of the API, the worker and the CLI."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    # --- the recipe's names -----------------------------------------------------------------
    project_id: str = _env(
        "GOOGLE_CLOUD_PROJECT",
        "local-project",
        "both",
        "Project that owns the topic, subscriptions and bucket.",
    )
    topic_name: str = _env(
        "TOPIC_NAME", "background-tasks", "both", "Topic tasks are published to."
    )
    subscription_name: str = _env(
        "SUBSCRIPTION_NAME",
        "background-tasks-worker",
        "both",
        "Pull subscription the worker drains.",
    )
    bucket_name: str = _env(
        "BUCKET_NAME",
        "local-task-outputs",
        "both",
        "Bucket for uploads, outputs, status records and archives.",
    )
    queue: str = _env(
        "QUEUE",
        "default",
        "worker",
        "The queue this worker execution drains (`taskctl worker --queue`); `default` is "
        "TOPIC_NAME/SUBSCRIPTION_NAME, queue q is <TOPIC_NAME>-q/<SUBSCRIPTION_NAME>-q.",
        pattern=r"^[a-z][a-z0-9-]{0,30}$",
    )
    max_messages: int = _env(
        "MAX_MESSAGES",
        0,
        "worker",
        "Most messages one worker execution takes; 0 means no cap.",
        ge=0,
    )
    port: int = _env(
        "PORT", 8080, "api", "Port the API listens on (Cloud Run sets it).", ge=1, le=65535
    )

    task_modules: tuple[str, ...] = _env(
        "TASK_MODULES",
        ("example_tasks",),
        "both",
        "Comma-separated modules (or packages) whose @task declarations the API, the worker and "
        "taskctl load at start; an import error stops the process (exit 3).",
    )

    # --- dead letters -----------------------------------------------------------------------
    dlq_topic_name: str = _env(
        "DLQ_TOPIC_NAME", "background-tasks-dlq", "both", "Dead-letter topic for failed tasks."
    )
    dlq_subscription_name: str = _env(
        "DLQ_SUBSCRIPTION_NAME",
        "background-tasks-dlq-sub",
        "both",
        "Subscription on the dead-letter topic that operators browse and replay from.",
    )
    max_delivery_attempts: int = _env(
        "MAX_DELIVERY_ATTEMPTS",
        5,
        "both",
        "Failed runs of its own before a task is dead-lettered with its last error (1 to 99, "
        "below PUBSUB_MAX_DELIVERY_ATTEMPTS). Deliveries lost to crashes do not count.",
        ge=1,
        le=99,
    )
    pubsub_max_delivery_attempts: int = _env(
        "PUBSUB_MAX_DELIVERY_ATTEMPTS",
        100,
        "worker",
        "The worker subscription's dead-letter policy (5 to 100, above MAX_DELIVERY_ATTEMPTS): "
        "Pub/Sub's own safety net for a message no worker ever settles. The worker re-publishes "
        "a message as a fresh one from half of this many deliveries, so lost deliveries never "
        "take a task there.",
        ge=5,
        le=100,
    )

    # --- leases and retries (`taskctl bootstrap` and Terraform shape the subscription alike) ---
    ack_deadline_seconds: int = _env(
        "ACK_DEADLINE_SECONDS",
        60,
        "worker",
        "Ack deadline of the worker subscription; the worker extends held messages by this much.",
        ge=10,
        le=600,
    )
    retry_min_backoff_seconds: float = _env(
        "RETRY_MIN_BACKOFF_SECONDS",
        10.0,
        "worker",
        "Backoff before a failed task's second attempt; it doubles each failure. The worker "
        "applies it (modifyAckDeadline), so it holds on every Pub/Sub and emulator alike.",
        ge=0,
        le=600,
    )
    retry_max_backoff_seconds: float = _env(
        "RETRY_MAX_BACKOFF_SECONDS",
        600.0,
        "worker",
        "Longest backoff between two attempts of a failed task.",
        ge=0,
        le=600,
    )
    claim_seconds: float = _env(
        "CLAIM_SECONDS",
        60.0,
        "worker",
        "How long a run's claim on its task lasts unless renewed (renewed every third of it): "
        "no other delivery runs the task meanwhile; a task whose execution died runs again after. "
        "A run that cannot renew its claim stops at three quarters of it.",
        ge=3,
        le=3600,
    )

    # --- worker -----------------------------------------------------------------------------
    worker_concurrency: int = _env(
        "WORKER_CONCURRENCY",
        64,
        "worker",
        "Tasks one execution runs at once (threads).",
        ge=1,
        le=512,
    )
    idle_timeout_seconds: float = _env(
        "IDLE_TIMEOUT_SECONDS",
        3.0,
        "worker",
        "Exit once the subscription stays empty this long.",
        gt=0,
        le=300,
    )
    pull_batch_size: int = _env(
        "PULL_BATCH_SIZE",
        100,
        "worker",
        "Messages asked for in one synchronous pull.",
        ge=1,
        le=1000,
    )
    task_timeout_seconds: float = _env(
        "TASK_TIMEOUT_SECONDS", 300.0, "worker", "Default time limit of one task.", gt=0
    )
    run_budget_seconds: float = _env(
        "RUN_BUDGET_SECONDS",
        540.0,
        "worker",
        "Stop pulling after this long; keep it safely below the job's task timeout (0: no budget).",
        ge=0,
    )
    shutdown_grace_seconds: float = _env(
        "SHUTDOWN_GRACE_SECONDS",
        7.0,
        "worker",
        "After SIGTERM, how long in-flight tasks may finish before they are nacked (Cloud Run allows 10 s).",
        ge=0,
        le=60,
    )
    max_processing_time_seconds: float = _env(
        "MAX_PROCESSING_TIME_SECONDS",
        30.0,
        "both",
        "Cap on the recipe's simulated processing_time.",
        ge=0,
    )

    input_prefixes: tuple[str, ...] = _env(
        "INPUT_PREFIXES",
        ("uploads/",),
        "both",
        "Comma-separated object prefixes tasks may read inputs from, in BUCKET_NAME only; the "
        "API refuses any other input (400), and the worker too.",
    )
    max_input_bytes: int = _env(
        "MAX_INPUT_BYTES",
        64 * 1024 * 1024,
        "both",
        "Largest input object a task may read; the API refuses bigger inputs at submit (400).",
        gt=0,
    )
    worker_memory_mb: int = _env(
        "WORKER_MEMORY_MB",
        0,
        "worker",
        "Memory the execution may use, in MiB; 0 reads the container's cgroup limit (else the "
        "machine's memory). Tasks start only while their reservations fit in it.",
        ge=0,
    )
    task_memory_mb: int = _env(
        "TASK_MEMORY_MB",
        64,
        "worker",
        "Memory a task reserves unless its type declares @task(memory_mb=...); an isolated "
        "run that goes past it is stopped as resource_exhausted.",
        ge=1,
        le=65536,
    )
    infra_retry_seconds: float = _env(
        "INFRA_RETRY_SECONDS",
        120.0,
        "worker",
        "How long Pub/Sub or GCS may stay unreachable before the execution gives up (exit 2).",
        gt=0,
    )
    max_task_bytes: int = _env(
        "MAX_TASK_BYTES",
        1024 * 1024,
        "both",
        "Largest task message body; bigger ones are refused by the API and dead-lettered by the worker.",
        gt=0,
        le=10_000_000,
    )

    # --- API --------------------------------------------------------------------------------
    max_upload_bytes: int = _env(
        "MAX_UPLOAD_BYTES", 10 * 1024 * 1024, "api", "Largest file POST /uploads accepts.", gt=0
    )
    publish_timeout_seconds: float = _env(
        "PUBLISH_TIMEOUT_SECONDS",
        4.0,
        "api",
        "How long a submit waits for Pub/Sub before answering 503 (keeps the answer under 5 s).",
        gt=0,
    )
    max_request_bytes: int = _env(
        "MAX_REQUEST_BYTES",
        1024 * 1024,
        "api",
        "Largest JSON request body the submit routes read (413 beyond; chunked bodies too).",
        gt=0,
    )
    queued_status_records: bool = _env(
        "QUEUED_STATUS_RECORDS",
        True,
        "api",
        "Write a `queued` status record for each published task before answering 202.",
    )
    api_workers: int = _env(
        "API_WORKERS",
        2,
        "api",
        "gunicorn worker processes of the API (about one per vCPU).",
        ge=1,
        le=16,
    )
    api_threads: int = _env(
        "API_THREADS", 16, "api", "Request threads per API worker process.", ge=1, le=256
    )
    request_read_timeout_seconds: float = _env(
        "REQUEST_READ_TIMEOUT_SECONDS",
        30.0,
        "api",
        "How long a client has to deliver a whole request, headers and body; slower ones get 408 "
        "and are closed. Requests are read before a request thread takes them.",
        gt=0,
        le=3600,
    )
    trusted_proxy_hops: int = _env(
        "TRUSTED_PROXY_HOPS",
        0,
        "api",
        "Proxies in front of the API that append the client's address to X-Forwarded-For: the "
        "client is that many entries from the right. 0 uses the connection's address (local); "
        "Cloud Run's front end is 1.",
        ge=0,
        le=10,
    )
    api_keys: frozenset[str] = _env(
        "API_KEYS",
        frozenset(),
        "api",
        "Comma-separated keys that may submit tasks; empty means no key is required.",
        repr=False,
    )
    admin_api_keys: frozenset[str] = _env(
        "ADMIN_API_KEYS",
        frozenset(),
        "api",
        "Comma-separated keys for /admin; empty disables the admin API and dashboard.",
        repr=False,
    )

    # --- the dispatcher: executions on demand (in the API) ------------------------------------
    dispatch_enabled: bool = _env(
        "DISPATCH_ENABLED",
        False,
        "both",
        "Start worker executions on demand through the Cloud Run Admin API (or the local "
        "stand-in) when tasks are accepted and on each tick; workers leave wake-ups for "
        "the messages they send back with a backoff.",
    )
    queues: str = _env(
        "QUEUES",
        "{}",
        "api",
        'Per-queue dispatch limits, JSON: {"urgent": {"job": ..., "max_tasks": 10, '
        '"backlog_per_task": 100, "max_concurrency": 0, "worker_concurrency": 64}}; '
        "queues it does not name get these defaults.",
    )
    worker_job_name: str = _env(
        "WORKER_JOB_NAME",
        "background-worker",
        "api",
        "The default queue's Cloud Run job; queue q's is <WORKER_JOB_NAME>-q unless QUEUES names it.",
    )
    run_region: str = _env(
        "RUN_REGION", "us-central1", "api", "Region of the worker jobs the dispatcher runs."
    )
    dispatch_cooldown_seconds: float = _env(
        "DISPATCH_COOLDOWN_SECONDS",
        2.0,
        "api",
        "Least time between two dispatch decisions for one queue, across every API instance.",
        gt=0,
        le=600,
    )
    scheduler_service_account: str | None = _env(
        "SCHEDULER_SERVICE_ACCOUNT",
        None,
        "api",
        "The only caller allowed on /internal/* (tick, periodic firings): its Google ID token "
        "is verified. Unset: open (the local stack).",
    )
    cloud_run_emulator_host: str | None = _env(
        "CLOUD_RUN_EMULATOR_HOST",
        None,
        "local",
        "host:port of the local Cloud Run Jobs stand-in (local only).",
    )

    # --- logging and the Cloud Run execution ------------------------------------------------
    log_level: str = _env("LOG_LEVEL", "INFO", "both", "Python log level.")
    cloud_run_execution: str | None = _env(
        "CLOUD_RUN_EXECUTION", None, "worker", "Set by Cloud Run Jobs: the execution name."
    )
    cloud_run_task_index: int = _env(
        "CLOUD_RUN_TASK_INDEX", 0, "worker", "Set by Cloud Run Jobs: this task's index.", ge=0
    )
    cloud_run_task_count: int = _env(
        "CLOUD_RUN_TASK_COUNT", 1, "worker", "Set by Cloud Run Jobs: tasks in the execution.", ge=1
    )

    # --- emulators: the Google clients read these themselves; kept here to report them -----
    pubsub_emulator_host: str | None = _env(
        "PUBSUB_EMULATOR_HOST", None, "local", "host:port of a Pub/Sub emulator (local only)."
    )
    storage_emulator_host: str | None = _env(
        "STORAGE_EMULATOR_HOST", None, "local", "URL of a GCS emulator (local only)."
    )
    monitoring_emulator_host: str | None = _env(
        "MONITORING_EMULATOR_HOST",
        None,
        "local",
        "host:port where the Pub/Sub emulator serves Cloud Monitoring's subscription backlog "
        "(ours does; Google's cannot, and the dashboard then says so). Local only.",
    )

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            keys = frozenset(part.strip() for part in value.split(",") if part.strip())
            if value and not keys:
                # Set but naming no key (" , "): running open would be the opposite of what
                # whoever set it meant, and nothing would say so.
                raise ValueError("is set but names no key (only commas and spaces)")
            return keys
        return value

    @field_validator("queues")
    @classmethod
    def _queues_json(cls, value: str) -> str:
        try:
            table = json.loads(value or "{}")
        except ValueError as exc:
            raise ValueError(f"is not JSON: {exc}") from None
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise ValueError('must be a JSON object of queue name → {"job": ..., ...}')
        return value

    @field_validator("input_prefixes", mode="before")
    @classmethod
    def _split_prefixes(cls, value):
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if not value:
            raise ValueError("must name at least one prefix")
        for prefix in value:
            if not prefix.endswith("/") or prefix.startswith("/") or ".." in prefix.split("/"):
                raise ValueError(f"{prefix!r} must be a folder like uploads/")
        return tuple(value)

    @model_validator(mode="after")
    def _safety_net_above_the_tasks_own_limit(self) -> Settings:
        if self.pubsub_max_delivery_attempts <= self.max_delivery_attempts:
            # Pub/Sub would dead-letter a task before its own failures could: the DLQ would
            # fill with tasks that never used their attempts, without a reason.
            raise ValueError(
                f"PUBSUB_MAX_DELIVERY_ATTEMPTS ({self.pubsub_max_delivery_attempts}) must be "
                f"above MAX_DELIVERY_ATTEMPTS ({self.max_delivery_attempts})"
            )
        return self

    @property
    def refresh_delivery_attempt(self) -> int:
        """From this delivery on, the worker swaps a message for a fresh copy before running
        it: half of Pub/Sub's limit, so as many deliveries again may be lost (or their
        re-publish fail) before Pub/Sub's safety net would dead-letter the task."""
        return max(2, self.pubsub_max_delivery_attempts // 2)

    @model_validator(mode="after")
    def _keys_have_one_role(self) -> Settings:
        shared = self.api_keys & self.admin_api_keys
        if shared:
            # A submit key that also opens /admin makes every submitting client an operator.
            raise ValueError(
                f"{len(shared)} key(s) appear in both API_KEYS and ADMIN_API_KEYS; "
                "a key is either a submit key or an admin key"
            )
        return self

    @field_validator("task_modules", mode="before")
    @classmethod
    def _split_modules(cls, value):
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if not value:
            raise ValueError("must name at least one module")
        for name in value:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a module name")
        return tuple(value)

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Read settings from the environment (or a given mapping), then apply overrides."""
        environ = os.environ if environ is None else environ
        data = {name: environ[name] for name in env_var_names() if environ.get(name, "") != ""}
        data.update(overrides)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                ": ".join(filter(None, [".".join(str(p) for p in err["loc"]), err["msg"]]))
                for err in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from exc

    def as_environ(self) -> dict[str, str]:
        """The settings as the environment variables that reproduce them in a child process."""
        env = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, frozenset):
                env[field.alias] = ",".join(sorted(value))
            elif isinstance(value, tuple):
                env[field.alias] = ",".join(value)
            elif value is not None:
                env[field.alias] = str(value)
        return env

    def replace(self, **changes) -> Settings:
        """Return a copy with some fields changed (by field name), validated again."""
        return type(self).model_validate({**self.model_dump(), **changes})

    # --- derived resource paths -------------------------------------------------------------
    # The default queue keeps TOPIC_NAME and SUBSCRIPTION_NAME; queue q uses <name>-q.
    @property
    def topic_path(self) -> str:
        """The default queue's topic."""
        return self.topic_path_for(DEFAULT_QUEUE)

    @property
    def subscription_path(self) -> str:
        """The subscription this worker drains: its QUEUE's."""
        return self.subscription_path_for(self.queue)

    def topic_name_for(self, queue: str) -> str:
        return self.topic_name if queue == DEFAULT_QUEUE else f"{self.topic_name}-{queue}"

    def subscription_name_for(self, queue: str) -> str:
        name = self.subscription_name
        return name if queue == DEFAULT_QUEUE else f"{name}-{queue}"

    def topic_path_for(self, queue: str) -> str:
        return f"projects/{self.project_id}/topics/{self.topic_name_for(queue)}"

    def subscription_path_for(self, queue: str) -> str:
        return f"projects/{self.project_id}/subscriptions/{self.subscription_name_for(queue)}"

    def queue_of_subscription(self, subscription: str | None) -> str | None:
        """The queue whose subscription this is (full path or bare name), or None."""
        name = (subscription or "").rsplit("/", 1)[-1]
        if name == self.subscription_name:
            return DEFAULT_QUEUE
        prefix = f"{self.subscription_name}-"
        return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None

    @property
    def dlq_topic_path(self) -> str:
        return f"projects/{self.project_id}/topics/{self.dlq_topic_name}"

    @property
    def dlq_subscription_path(self) -> str:
        return f"projects/{self.project_id}/subscriptions/{self.dlq_subscription_name}"

    def execution_labels(self) -> dict[str, str | int]:
        """The Cloud Run Job fields every worker log line carries."""
        return {
            "cloud_run_execution": self.cloud_run_execution or "local",
            "cloud_run_task_index": self.cloud_run_task_index,
            "cloud_run_task_count": self.cloud_run_task_count,
        }


def env_var_names(scope: Scope | None = None) -> list[str]:
    """Every environment variable Settings reads, optionally only those of one scope."""
    names = []
    for field in Settings.model_fields.values():
        field_scope = (field.json_schema_extra or {}).get("scope")
        if (
            scope is None
            or field_scope == scope
            or (field_scope == "both" and scope in ("api", "worker"))
        ):
            names.append(field.alias)
    return names


def settings_table_markdown() -> str:
    """The settings as the Markdown table the README embeds (kept equal by a test)."""
    rows = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for field in Settings.model_fields.values():
        default = field.default
        if isinstance(default, frozenset):
            default = ",".join(sorted(default)) or "(empty)"
        elif isinstance(default, tuple):
            default = ",".join(default)
        elif default is None:
            default = "(unset)"
        scope = (field.json_schema_extra or {}).get("scope")
        rows.append(f"| `{field.alias}` | `{default}` | {scope} | {field.description} |")
    return "\n".join(rows)
