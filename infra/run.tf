# The API (Cloud Run service) and the workers (one Cloud Run job per queue).
#
# Environment: every variable in shared/taskcore/settings.py of scope "both", "api" or
# "worker" is set here from the same Terraform values as the resources it names; tests/infra
# fails when the code reads a variable that is set nowhere. Cloud Run provides the rest
# itself: PORT for the service; CLOUD_RUN_EXECUTION, CLOUD_RUN_TASK_INDEX and
# CLOUD_RUN_TASK_COUNT for the job (setting any of those is an error).

locals {
  # Read by both the API and the worker.
  common_env = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    # The default queue's; the code derives the other queues' names from them (queues.tf).
    TOPIC_NAME                  = google_pubsub_topic.tasks["default"].name
    SUBSCRIPTION_NAME           = google_pubsub_subscription.worker["default"].name
    BUCKET_NAME                 = google_storage_bucket.tasks.name
    DLQ_TOPIC_NAME              = google_pubsub_topic.dlq.name
    DLQ_SUBSCRIPTION_NAME       = google_pubsub_subscription.dlq.name
    MAX_DELIVERY_ATTEMPTS       = tostring(var.max_delivery_attempts)
    MAX_PROCESSING_TIME_SECONDS = tostring(var.max_processing_time_seconds)
    MAX_TASK_BYTES              = tostring(var.max_task_bytes)
    LOG_LEVEL                   = var.log_level
    # The worker and the API must load the same task modules (deploy the worker first).
    TASK_MODULES = join(",", var.task_modules)
    # What tasks may read: the API refuses other inputs at submit, the worker again at read.
    INPUT_PREFIXES  = join(",", var.input_prefixes)
    MAX_INPUT_BYTES = tostring(var.max_input_bytes)
  }

  api_env = {
    MAX_UPLOAD_BYTES        = tostring(var.max_upload_bytes)
    PUBLISH_TIMEOUT_SECONDS = tostring(var.publish_timeout_seconds)
    MAX_REQUEST_BYTES       = tostring(var.max_request_bytes)
    QUEUED_STATUS_RECORDS   = tostring(var.queued_status_records)
    API_WORKERS             = tostring(var.api_workers)
    API_THREADS             = tostring(var.api_threads)
    # 408 past this; it also bounds a request inside the service timeout below.
    REQUEST_READ_TIMEOUT_SECONDS = tostring(var.request_read_timeout_seconds)
    # Where the admin sign-in throttle finds the client's address.
    TRUSTED_PROXY_HOPS = tostring(var.trusted_proxy_hops)
    # The dispatcher: each queue's job and sizing (queues.tf), where the jobs are, and how
    # often it may start another execution of one queue.
    QUEUES                    = jsonencode(local.dispatch_queues)
    RUN_REGION                = var.region
    DISPATCH_COOLDOWN_SECONDS = tostring(var.dispatch_cooldown_seconds)
    DISPATCH_ENABLED          = tostring(var.dispatch_enabled)
    WORKER_JOB_NAME           = var.worker_job_name
    # Only Cloud Scheduler may call /internal/* (the tick, periodic firings): the API
    # verifies its ID token names this account.
    SCHEDULER_SERVICE_ACCOUNT = google_service_account.scheduler.email
  }

  # Cloud Run sends an instance no more requests than its gunicorn threads can serve at once.
  api_concurrency = coalesce(var.api_concurrency, var.api_workers * var.api_threads)

  # Every queue's worker; QUEUE and WORKER_CONCURRENCY are set per queue on its job.
  worker_env = {
    PULL_BATCH_SIZE      = tostring(var.pull_batch_size)
    IDLE_TIMEOUT_SECONDS = tostring(var.idle_timeout_seconds)
    MAX_MESSAGES         = tostring(var.max_messages)
    TASK_TIMEOUT_SECONDS = tostring(var.task_timeout_seconds)
    # The budget keeps one container within the job's task timeout (check below).
    RUN_BUDGET_SECONDS     = tostring(var.run_budget_seconds)
    SHUTDOWN_GRACE_SECONDS = tostring(var.shutdown_grace_seconds)
    INFRA_RETRY_SECONDS    = tostring(var.infra_retry_seconds)
    # The subscription's ack deadline: the worker extends held messages by this much.
    ACK_DEADLINE_SECONDS      = tostring(var.ack_deadline_seconds)
    RETRY_MIN_BACKOFF_SECONDS = tostring(var.retry_min_backoff_seconds)
    RETRY_MAX_BACKOFF_SECONDS = tostring(var.retry_max_backoff_seconds)
    CLAIM_SECONDS             = tostring(var.claim_seconds)
    # = dead_letter_policy: the worker re-publishes a message from half of it.
    PUBSUB_MAX_DELIVERY_ATTEMPTS = tostring(var.pubsub_max_delivery_attempts)
    # 0: the worker reads its budget from the job's memory limit (the container's cgroup).
    WORKER_MEMORY_MB = tostring(var.worker_memory_mb)
    # Wake-ups (a task sent back with a backoff) and wait reports for the dispatcher.
    DISPATCH_ENABLED = tostring(var.dispatch_enabled)
    TASK_MEMORY_MB   = tostring(var.task_memory_mb)
  }
}

resource "google_cloud_run_v2_service" "api" {
  project             = var.project_id
  name                = var.api_service_name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL" # reachable, but only by callers with run.invoker
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.api.email
    timeout                          = "60s"
    max_instance_request_concurrency = local.api_concurrency

    scaling {
      min_instance_count = var.api_min_instances
      max_instance_count = var.api_max_instances
    }

    containers {
      # The image's CMD is `taskctl api`: gunicorn bound to $PORT.
      image = local.api_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.api_cpu
          memory = var.api_memory
        }
      }

      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.api_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.api_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }
    }
  }

  # No dependency on the jobs QUEUES names (it names them from locals): `-target` of the
  # service would apply the jobs too, and adding or removing a task type deploys the two
  # apart (docs/deploy.md, step 10). Until a new queue's job exists the dispatcher's runs
  # of it fail, and the next tick retries.
  depends_on = [
    google_project_service.enabled,
    google_secret_manager_secret_iam_member.api_secrets,
  ]
}

# One job per queue, all running the worker image as the one worker service account. The
# dispatcher starts executions with overrides (task count, env, timeout); the job's own
# task count is what a run without overrides starts (the safety-net schedule, `gcloud run
# jobs execute`).
resource "google_cloud_run_v2_job" "worker" {
  for_each = local.queues

  project             = var.project_id
  name                = each.value.job_name
  location            = var.region
  deletion_protection = var.deletion_protection

  template {
    task_count = each.value.task_count
    # 0: every task of an execution at once. Overrides cannot change parallelism, and the
    # dispatcher sizes an execution by its task count, within max_tasks over all executions.
    parallelism = 0

    template {
      service_account = google_service_account.worker.email
      timeout         = "${each.value.job_task_timeout_seconds}s"
      max_retries     = each.value.job_max_retries

      containers {
        # The image's CMD is `taskctl worker`: drain the queue's subscription once, then exit.
        image = local.worker_image

        resources {
          limits = {
            cpu    = each.value.cpu
            memory = each.value.memory
          }
        }

        # The queue this job drains: its subscription and topic are derived from it.
        env {
          name  = "QUEUE"
          value = each.key
        }

        env {
          name  = "WORKER_CONCURRENCY"
          value = tostring(each.value.worker_concurrency)
        }

        dynamic "env" {
          for_each = local.common_env
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = local.worker_env
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = var.worker_secret_env
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = env.value
                version = "latest"
              }
            }
          }
        }
      }
    }
  }

  # A queue's job runs only once its account may drain the queue (the topics and
  # subscriptions it depends on through TOPIC_NAME and SUBSCRIPTION_NAME already), so
  # `-target=google_cloud_run_v2_job.worker` brings a new queue up whole (docs/deploy.md).
  depends_on = [
    google_project_service.enabled,
    google_secret_manager_secret_iam_member.worker_secrets,
    google_pubsub_subscription_iam_member.worker_subscriber,
    google_pubsub_subscription_iam_member.worker_subscriber_pubsub_agent,
    google_pubsub_topic_iam_member.worker_tasks_publisher,
    google_pubsub_topic_iam_member.worker_dlq_publisher,
  ]

  lifecycle {
    precondition {
      condition     = length(local.queue_problems) == 0
      error_message = join("; ", local.queue_problems)
    }
  }
}

check "worker_limits_fit" {
  # The worker stops pulling after RUN_BUDGET_SECONDS and then finishes what it holds, each
  # task within TASK_TIMEOUT_SECONDS; past the job's task timeout Cloud Run kills it mid-task
  # (the tasks are redelivered, but the execution counts as failed).
  assert {
    condition = var.run_budget_seconds > 0 && alltrue([
      for queue in values(local.queues) : var.run_budget_seconds + var.task_timeout_seconds < queue.job_task_timeout_seconds
    ])
    error_message = "run_budget_seconds (${var.run_budget_seconds}) + task_timeout_seconds (${var.task_timeout_seconds}) must be above 0 and below every queue's job_task_timeout_seconds (${join(", ", [for name, queue in local.queues : "${name}: ${queue.job_task_timeout_seconds}"])})."
  }
}
