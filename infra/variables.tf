# Inputs. Only project_id is required; every default gives a working pipeline.
# Defaults of the settings the code also reads (MAX_DELIVERY_ATTEMPTS, ...) equal the
# defaults in shared/taskcore/settings.py, so local runs and Cloud behave alike
# (tests/infra checks that they stay equal).

# --- where ---------------------------------------------------------------------------------

variable "project_id" {
  description = "Project to deploy into (it must exist and have billing enabled)."
  type        = string
}

variable "region" {
  description = "Region of Cloud Run, Artifact Registry, Cloud Scheduler and the bucket."
  type        = string
  default     = "us-central1"
}

variable "bucket_location" {
  description = "Bucket location; null means var.region."
  type        = string
  default     = null
}

# --- names ---------------------------------------------------------------------------------

variable "topic_name" {
  description = "Topic tasks are published to (TOPIC_NAME)."
  type        = string
  default     = "background-tasks"
}

variable "subscription_name" {
  description = "Pull subscription the worker drains (SUBSCRIPTION_NAME)."
  type        = string
  default     = "background-tasks-worker"
}

variable "dlq_topic_name" {
  description = "Dead-letter topic (DLQ_TOPIC_NAME)."
  type        = string
  default     = "background-tasks-dlq"
}

variable "dlq_subscription_name" {
  description = "Subscription on the dead-letter topic that operators browse and replay (DLQ_SUBSCRIPTION_NAME)."
  type        = string
  default     = "background-tasks-dlq-sub"
}

variable "bucket_name" {
  description = "Bucket for uploads, outputs, status records and archives (BUCKET_NAME); null means \"<project_id>-task-outputs\"."
  type        = string
  default     = null
}

variable "artifact_repository_id" {
  description = "Artifact Registry Docker repository the images are pushed to."
  type        = string
  default     = "task-pipeline"
}

variable "api_service_name" {
  description = "Cloud Run service of the API."
  type        = string
  default     = "task-api"
}

variable "worker_job_name" {
  description = "Cloud Run job of the worker."
  type        = string
  default     = "background-worker"
}

# --- images --------------------------------------------------------------------------------

variable "api_image_tag" {
  description = "Tag of the task-api image in the Artifact Registry repository."
  type        = string
  default     = "latest"
}

variable "worker_image_tag" {
  description = "Tag of the background-worker image in the Artifact Registry repository."
  type        = string
  default     = "latest"
}

# --- the subscription (Terraform and the code read the same values) ----------------------

variable "max_delivery_attempts" {
  description = "Failed runs of its own before the worker dead-letters a task with its last error (1 to 99, below pubsub_max_delivery_attempts); MAX_DELIVERY_ATTEMPTS for the code."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 1 && var.max_delivery_attempts <= 99
    error_message = "A task may fail 1 to 99 times; Pub/Sub's own limit must stay above it."
  }
}

variable "pubsub_max_delivery_attempts" {
  description = "The subscriptions' dead-letter policy (5 to 100, above max_delivery_attempts): Pub/Sub's safety net for a message no worker settles. Set on the subscriptions and as PUBSUB_MAX_DELIVERY_ATTEMPTS for the worker, which re-publishes a message from half of it."
  type        = number
  default     = 100

  validation {
    condition     = var.pubsub_max_delivery_attempts >= 5 && var.pubsub_max_delivery_attempts <= 100
    error_message = "Pub/Sub accepts 5 to 100 delivery attempts."
  }
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the worker subscription (10 to 600 s); ACK_DEADLINE_SECONDS of `taskctl bootstrap` locally."
  type        = number
  default     = 60

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "Pub/Sub accepts ack deadlines of 10 to 600 seconds."
  }
}

variable "retry_min_backoff_seconds" {
  description = "RETRY_MIN_BACKOFF_SECONDS: backoff before a failed task's second attempt (doubling each failure), applied by the worker."
  type        = number
  default     = 10

  validation {
    condition     = var.retry_min_backoff_seconds >= 0 && var.retry_min_backoff_seconds <= 600
    error_message = "Pub/Sub accepts backoffs of 0 to 600 seconds."
  }
}

variable "retry_max_backoff_seconds" {
  description = "RETRY_MAX_BACKOFF_SECONDS: longest backoff between two attempts of a failed task, applied by the worker."
  type        = number
  default     = 600

  validation {
    condition     = var.retry_max_backoff_seconds >= 0 && var.retry_max_backoff_seconds <= 600
    error_message = "Pub/Sub accepts backoffs of 0 to 600 seconds."
  }
}

variable "dlq_retention_days" {
  description = "How long the DLQ subscription keeps dead letters nobody acknowledged (at most 31 days)."
  type        = number
  default     = 31

  validation {
    condition     = var.dlq_retention_days >= 1 && var.dlq_retention_days <= 31
    error_message = "Pub/Sub retains unacknowledged messages for at most 31 days."
  }
}

# --- bucket lifecycle ----------------------------------------------------------------------

variable "uploads_retention_days" {
  description = "Objects under uploads/ are deleted this many days after creation."
  type        = number
  default     = 30
}

variable "dlq_archive_retention_days" {
  description = "Objects under dlq-archive/ are deleted this many days after creation."
  type        = number
  default     = 90
}

variable "status_retention_days" {
  description = "Status records (status/<task_id>.json: the task history GET /tasks/<id> and the dashboard read) are deleted this many days after their last update. They must outlive every copy of their message (7 days on the subscription, up to 31 in the DLQ): a redelivered or replayed task whose record is gone runs again."
  type        = number
  default     = 90

  validation {
    condition     = var.status_retention_days >= 31
    error_message = "Keep status records at least 31 days, the longest a dead letter can wait for a replay."
  }
}

variable "idempotency_retention_days" {
  description = "Idempotency-Key records under idempotency/ are deleted this many days after creation (the replay window)."
  type        = number
  default     = 1
}

variable "journal_retention_days" {
  description = "Transition journal objects (journal/: what the dashboard's task list pages through) are deleted this many days after they were written. Tasks older than this drop out of the list but stay readable by id while their status record lives; keeping it at most status_retention_days means the list never names a task whose record is gone for long."
  type        = number
  default     = 90

  validation {
    condition     = var.journal_retention_days >= 1
    error_message = "Cloud Storage lifecycle ages count whole days: at least 1."
  }
}

variable "stats_retention_days" {
  description = "Per-writer stats objects (stats/: the dashboard's last hour, one per API process and worker execution) are deleted this many days after their last write. The dashboard reads only the last two hours."
  type        = number
  default     = 2

  validation {
    condition     = var.stats_retention_days >= 1
    error_message = "Cloud Storage lifecycle ages count whole days: at least 1."
  }
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete the bucket with its objects. Keep false in production."
  type        = bool
  default     = false
}

# --- the API (Cloud Run service) -------------------------------------------------------------

variable "allow_unauthenticated_api" {
  description = "WARNING: true grants roles/run.invoker to allUsers, so anyone on the internet can submit tasks. Keep false and call the API with an identity token."
  type        = bool
  default     = false
}

variable "api_invokers" {
  description = "Members allowed to call the API, e.g. [\"user:alice@example.com\", \"serviceAccount:ci@p.iam.gserviceaccount.com\"]. Project owners can already."
  type        = list(string)
  default     = []
}

variable "api_min_instances" {
  description = "Minimum API instances (0 scales to zero; 1 avoids cold starts)."
  type        = number
  default     = 0
}

variable "api_max_instances" {
  description = "Maximum API instances."
  type        = number
  default     = 10
}

variable "api_concurrency" {
  description = "Requests Cloud Run sends one API instance at once; null means api_workers * api_threads."
  type        = number
  default     = null
}

variable "api_cpu" {
  description = "CPU limit of one API instance."
  type        = string
  default     = "1"
}

variable "api_memory" {
  description = "Memory limit of one API instance."
  type        = string
  default     = "512Mi"
}

variable "max_upload_bytes" {
  description = "MAX_UPLOAD_BYTES: largest file POST /uploads accepts (Cloud Run caps an HTTP/1 request at 32 MiB)."
  type        = number
  default     = 10485760
}

variable "api_workers" {
  description = "API_WORKERS: gunicorn worker processes of one API instance (about one per vCPU; two keep a 1-vCPU instance serving while one process waits on Pub/Sub or Cloud Storage)."
  type        = number
  default     = 2
}

variable "api_threads" {
  description = "API_THREADS: request threads per gunicorn worker process."
  type        = number
  default     = 16
}

variable "publish_timeout_seconds" {
  description = "PUBLISH_TIMEOUT_SECONDS: how long a submit waits for Pub/Sub before answering 503 (under 5 s in all)."
  type        = number
  default     = 4
}

variable "max_request_bytes" {
  description = "MAX_REQUEST_BYTES: largest JSON request body the submit routes read; larger ones get 413."
  type        = number
  default     = 1048576
}

variable "queued_status_records" {
  description = "QUEUED_STATUS_RECORDS: write a queued status record per published task, before its 202."
  type        = bool
  default     = true
}

variable "request_read_timeout_seconds" {
  description = "REQUEST_READ_TIMEOUT_SECONDS: how long a client has to deliver a whole request (headers and body) before 408 and close; keep it at or below the service timeout (60 s)."
  type        = number
  default     = 30
}

variable "trusted_proxy_hops" {
  description = "TRUSTED_PROXY_HOPS: proxies that append the client's address to X-Forwarded-For (the client is that many entries from the right). Cloud Run's front end appends one; with a load balancer in front, check a request's header before changing it."
  type        = number
  default     = 1
}

# --- the workers (one Cloud Run job per queue) ----------------------------------------------
# Each of these is the default of the queue field named in its description: a queue in
# var.queues that leaves the field out takes the value here.

variable "job_task_count" {
  description = "Containers (Cloud Run tasks) a queue's safety-net run starts, the job's own task count (queue field task_count). The dispatcher sizes the executions it starts itself."
  type        = number
  default     = 1
}

variable "job_parallelism" {
  description = "Most worker containers (Cloud Run tasks) one queue runs at once over all its executions (queue field max_tasks): the dispatcher starts no more. Before queues this was the parallelism of one execution."
  type        = number
  default     = 10
}

variable "job_task_timeout_seconds" {
  description = "Cloud Run kills a worker container running longer than this (queue field job_task_timeout_seconds); it must exceed run_budget_seconds + task_timeout_seconds."
  type        = number
  default     = 900
}

variable "job_max_retries" {
  description = "Cloud Run retries of a failed worker container (queue field job_max_retries). The worker exits non-zero only when infrastructure is unreachable."
  type        = number
  default     = 1
}

variable "worker_cpu" {
  description = "CPU limit of one worker container (queue field cpu)."
  type        = string
  default     = "1"
}

variable "worker_memory" {
  description = "Memory limit of one worker container (queue field memory)."
  type        = string
  default     = "1Gi"
}

variable "worker_concurrency" {
  description = "WORKER_CONCURRENCY: tasks one worker container runs at once, in threads (queue field worker_concurrency)."
  type        = number
  default     = 64
}

variable "pull_batch_size" {
  description = "PULL_BATCH_SIZE: messages asked for in one synchronous pull (at most 1,000)."
  type        = number
  default     = 100
}

variable "idle_timeout_seconds" {
  description = "IDLE_TIMEOUT_SECONDS: the worker exits once the subscription stays empty this long."
  type        = number
  default     = 3
}

variable "max_messages" {
  description = "MAX_MESSAGES: most messages one worker container takes; 0 means no cap."
  type        = number
  default     = 0
}

variable "task_timeout_seconds" {
  description = "TASK_TIMEOUT_SECONDS: default time limit of one task."
  type        = number
  default     = 300
}

variable "run_budget_seconds" {
  description = "RUN_BUDGET_SECONDS: a worker container stops pulling after this long, then finishes what it holds."
  type        = number
  default     = 540
}

variable "shutdown_grace_seconds" {
  description = "SHUTDOWN_GRACE_SECONDS: after SIGTERM, how long in-flight tasks may finish before they are nacked (Cloud Run kills 10 s after SIGTERM)."
  type        = number
  default     = 7

  validation {
    condition     = var.shutdown_grace_seconds >= 0 && var.shutdown_grace_seconds < 10
    error_message = "Cloud Run sends SIGKILL 10 seconds after SIGTERM; keep the grace below that."
  }
}

variable "worker_memory_mb" {
  description = "WORKER_MEMORY_MB: the worker's memory budget in MiB; 0 reads it from the job's memory limit."
  type        = number
  default     = 0
}

variable "task_memory_mb" {
  description = "TASK_MEMORY_MB: memory a task reserves unless its type declares its own; an isolated run past it is stopped."
  type        = number
  default     = 64
}

variable "claim_seconds" {
  description = "CLAIM_SECONDS: how long a run's claim on its task lasts unless renewed; a task whose execution died runs again after this. A run that cannot renew its claim stops at three quarters of it."
  type        = number
  default     = 60

  validation {
    condition     = var.claim_seconds >= 3 && var.claim_seconds <= 3600
    error_message = "claim_seconds must be between 3 and 3600."
  }
}

variable "infra_retry_seconds" {
  description = "INFRA_RETRY_SECONDS: how long Pub/Sub or Cloud Storage may stay unreachable before a worker execution gives up (exit 2)."
  type        = number
  default     = 120
}

variable "max_task_bytes" {
  description = "MAX_TASK_BYTES: largest task message body; the API refuses bigger ones, the worker dead-letters them (Pub/Sub's own limit is 10 MB)."
  type        = number
  default     = 1048576

  validation {
    condition     = var.max_task_bytes > 0 && var.max_task_bytes <= 10000000
    error_message = "Pub/Sub messages are at most 10 MB."
  }
}

variable "max_processing_time_seconds" {
  description = "MAX_PROCESSING_TIME_SECONDS: cap on the simulated processing_time of a task."
  type        = number
  default     = 30
}

variable "task_modules" {
  description = "TASK_MODULES: modules (or packages) whose @task declarations the API and the worker load. Both images must contain them; deploy the worker before the API when adding one (docs/deploy.md, step 10)."
  type        = list(string)
  default     = ["example_tasks"]
}

variable "input_prefixes" {
  description = "INPUT_PREFIXES: object prefixes (folders) of the bucket that tasks may read inputs from."
  type        = list(string)
  default     = ["uploads/"]

  validation {
    condition     = length(var.input_prefixes) > 0 && alltrue([for p in var.input_prefixes : endswith(p, "/") && !startswith(p, "/")])
    error_message = "input_prefixes must name at least one folder, like uploads/."
  }
}

variable "max_input_bytes" {
  description = "MAX_INPUT_BYTES: largest input object a task may read; bigger inputs are refused at submit."
  type        = number
  default     = 67108864
}

variable "log_level" {
  description = "LOG_LEVEL of the API and the worker."
  type        = string
  default     = "INFO"
}

# --- queues and the dispatcher ----------------------------------------------------------------

variable "queues" {
  description = <<-EOT
    The queues, each drained by its own Cloud Run job: queue name => what differs from the
    defaults. @task(queue="urgent") routes a task type to a queue; types that name none go to
    "default", which must be here and keeps the names topic_name, subscription_name and
    worker_job_name (so existing deployments carry over). Queue q has the topic
    "<topic_name>-q", the subscription "<subscription_name>-q" (dead letters of every queue go
    to the one DLQ) and the job "<worker_job_name>-q". A field left out takes the variable
    named in brackets:
      max_tasks                    most worker containers of the queue at once (job_parallelism)
      worker_concurrency           tasks one container runs at once (worker_concurrency)
      max_concurrency              most tasks of the queue running at once in all, to protect
                                   what they call; the dispatcher starts no container past it
                                   (max_tasks * worker_concurrency)
      backlog_per_task             queued messages per container: an execution starts about
                                   backlog / backlog_per_task containers (worker_concurrency)
      cpu, memory                  of one container (worker_cpu, worker_memory)
      job_task_timeout_seconds     (job_task_timeout_seconds)
      job_max_retries              (job_max_retries)
      schedule                     cron of the safety-net run; "" runs none (worker_schedule)
      task_count                   containers a safety-net run starts (job_task_count)
      oldest_unacked_alert_seconds (oldest_unacked_alert_seconds)
  EOT
  type = map(object({
    max_tasks                    = optional(number)
    worker_concurrency           = optional(number)
    max_concurrency              = optional(number)
    backlog_per_task             = optional(number)
    cpu                          = optional(string)
    memory                       = optional(string)
    job_task_timeout_seconds     = optional(number)
    job_max_retries              = optional(number)
    schedule                     = optional(string)
    task_count                   = optional(number)
    oldest_unacked_alert_seconds = optional(number)
  }))
  default = {
    default = {}
  }

  validation {
    condition     = contains(keys(var.queues), "default")
    error_message = "queues must contain \"default\": task types that name no queue go there."
  }

  # The same rule as @task(queue=...) in shared/taskcore/tasks.py.
  validation {
    condition     = alltrue([for name in keys(var.queues) : can(regex("^[a-z][a-z0-9-]{0,30}$", name))])
    error_message = "A queue name is a lower-case letter, then up to 30 lower-case letters, digits or '-'."
  }

  validation {
    condition = alltrue(flatten([
      for queue in values(var.queues) : [
        for count in [queue.max_tasks, queue.worker_concurrency, queue.max_concurrency, queue.backlog_per_task, queue.task_count, queue.job_task_timeout_seconds] :
        count == null ? true : count >= 1 && floor(count) == count
      ]
    ]))
    error_message = "max_tasks, worker_concurrency, max_concurrency, backlog_per_task, task_count and job_task_timeout_seconds are whole numbers of at least 1."
  }

  validation {
    condition = alltrue([
      for queue in values(var.queues) : queue.job_max_retries == null ? true : queue.job_max_retries >= 0 && queue.job_max_retries <= 10
    ])
    error_message = "Cloud Run retries a failed container 0 to 10 times."
  }
}

variable "dispatch_cooldown_seconds" {
  description = "DISPATCH_COOLDOWN_SECONDS: the least time between two dispatch decisions for one queue, across every API instance, so a stream of submissions does not start one execution per task."
  type        = number
  default     = 2
}

variable "dispatch_enabled" {
  description = "DISPATCH_ENABLED: the API starts worker executions within seconds of accepting tasks, sized by the backlog (false: only the scheduled safety-net runs drain the queues)."
  type        = bool
  default     = true
}

variable "dispatch_tick_schedule" {
  description = "Cron of the Cloud Scheduler job that calls POST /internal/tick on the API: the dispatcher's safety net (executions the API could not start when tasks arrived) and the publisher of delayed tasks that came due. Cloud Scheduler's finest period is a minute."
  type        = string
  default     = "* * * * *"
}

variable "periodic_tasks" {
  description = <<-EOT
    Periodic task types (@task(schedule=..., timezone=...)), as `taskctl schedules export`
    prints them: [{ task_type, schedule, timezone, queue }]. Each becomes a Cloud Scheduler
    job that calls POST /internal/fire/<task_type> on the API with an OIDC token; the API
    derives the task id from the firing's schedule time, so a retried or duplicated firing
    runs once. Generate it into infra/periodic_tasks.auto.tfvars.json (docs/deploy.md).
  EOT
  type = list(object({
    task_type = string
    schedule  = string
    timezone  = optional(string)
    queue     = optional(string, "default")
  }))
  default = []

  validation {
    condition     = alltrue([for task in var.periodic_tasks : can(regex("^[a-z][a-z0-9_]{0,62}$", task.task_type))])
    error_message = "A task type name is a lower-case letter, then up to 62 lower-case letters, digits or '_' (shared/taskcore/tasks.py)."
  }

  validation {
    condition     = length(distinct([for task in var.periodic_tasks : task.task_type])) == length(var.periodic_tasks)
    error_message = "A task type appears twice in periodic_tasks: it has one schedule."
  }
}

# --- secrets -------------------------------------------------------------------------------

variable "api_secret_env" {
  description = "Environment variable name => Secret Manager secret id (same project) for API settings that are secrets (names ending in _KEYS). Create each secret and a version first; see docs/deploy.md."
  type        = map(string)
  default = {
    API_KEYS       = "task-api-keys"
    ADMIN_API_KEYS = "task-admin-api-keys"
  }
}

variable "worker_secret_env" {
  description = "Environment variable name => Secret Manager secret id for worker settings that are secrets."
  type        = map(string)
  default     = {}
}

# --- schedules -----------------------------------------------------------------------------

variable "worker_schedule" {
  description = "Cron (unix-cron format) of each queue's safety-net run: Cloud Scheduler runs the queue's job, without the dispatcher, in case the API cannot (queue field schedule)."
  type        = string
  default     = "*/5 * * * *"
}

variable "schedule_time_zone" {
  description = "Time zone of the schedules (tz database name)."
  type        = string
  default     = "Etc/UTC"
}

variable "scheduled_tasks" {
  description = <<-EOT
    Tasks published to a queue's topic on a schedule by Cloud Scheduler, keyed by a short name:
    { nightly-rollup = { schedule = "0 2 * * *", task_json = "{\"task_type\":\"data_transformation\",\"transformation\":\"aggregate\",\"dataset_size\":1000}" } }.
    task_json is the body POST /submit-task accepts: {"task_type": ..., and the type's fields beside it}.
    queue (default "default") must be the queue the task type is routed to.
    Each run is a new task (its task_id is "msg-<Pub/Sub message id>"). Task types declared
    with @task(schedule=...) belong in periodic_tasks instead.
  EOT
  type = map(object({
    schedule  = string
    task_json = string
    time_zone = optional(string)
    queue     = optional(string, "default")
  }))
  default = {}

  validation {
    condition = alltrue([
      for name, task in var.scheduled_tasks :
      can(jsondecode(task.task_json).task_type) && can(regex("^[a-z][a-z0-9-]{0,40}$", name))
    ])
    error_message = "Each scheduled task needs a name of lowercase letters, digits and dashes, and task_json that is a JSON object with a task_type."
  }
}

# --- alerting ------------------------------------------------------------------------------

variable "alert_email" {
  description = "Email address alerts go to; empty creates no email channel."
  type        = string
  default     = ""
}

variable "notification_channels" {
  description = "Existing Cloud Monitoring notification channel ids that alerts also go to."
  type        = list(string)
  default     = []
}

variable "oldest_unacked_alert_seconds" {
  description = "Alert when the oldest unacknowledged task on a queue's subscription is older than this (queue field oldest_unacked_alert_seconds). A batch queue capped by max_tasks may take hours to drain a burst: give it its own."
  type        = number
  default     = 1800
}

variable "failed_attempts_alert_threshold" {
  description = "Alert when more task attempts than this fail (task_retried or task_dead_lettered) within 10 minutes; null turns the alert off."
  type        = number
  default     = 20

  validation {
    condition     = var.failed_attempts_alert_threshold == null ? true : var.failed_attempts_alert_threshold >= 0
    error_message = "The threshold is a count of failed attempts: 0 or more (null turns the alert off)."
  }
}

# --- safety --------------------------------------------------------------------------------

variable "deletion_protection" {
  description = "Refuse to delete the Cloud Run service and job on destroy or replace."
  type        = bool
  default     = false
}
