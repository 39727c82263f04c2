# The queues (var.queues) resolved: every field set, and the names of each queue's topic,
# subscription and job. Only variables go in here, so tests/infra evaluates this file with
# Terraform itself (no provider needed) and checks what the resources are built from.

locals {
  # What a queue takes for each field it leaves out. max_concurrency and backlog_per_task
  # are derived from the queue's own values below when left out.
  queue_defaults = {
    max_tasks                    = var.job_parallelism
    worker_concurrency           = var.worker_concurrency
    max_concurrency              = null
    backlog_per_task             = null
    cpu                          = var.worker_cpu
    memory                       = var.worker_memory
    job_task_timeout_seconds     = var.job_task_timeout_seconds
    job_max_retries              = var.job_max_retries
    schedule                     = var.worker_schedule
    task_count                   = var.job_task_count
    oldest_unacked_alert_seconds = var.oldest_unacked_alert_seconds
  }

  queue_settings = {
    for name, queue in var.queues : name => merge(
      local.queue_defaults,
      { for field, value in queue : field => value if value != null },
    )
  }

  # The code derives the same names from TOPIC_NAME, SUBSCRIPTION_NAME and the queue name
  # (QUEUE for a worker, the keys of QUEUES for the API): the default queue keeps the
  # unsuffixed names of the deployments that predate queues.
  queues = {
    for name, queue in local.queue_settings : name => merge(queue, {
      topic_name        = name == "default" ? var.topic_name : "${var.topic_name}-${name}"
      subscription_name = name == "default" ? var.subscription_name : "${var.subscription_name}-${name}"
      job_name          = name == "default" ? var.worker_job_name : "${var.worker_job_name}-${name}"
      max_concurrency   = coalesce(queue.max_concurrency, queue.max_tasks * queue.worker_concurrency)
      backlog_per_task  = coalesce(queue.backlog_per_task, queue.worker_concurrency)
    })
  }

  # Queues whose job Cloud Scheduler also runs on their schedule.
  scheduled_queues = { for name, queue in local.queues : name => queue if queue.schedule != "" }

  # QUEUES, the API's table of the queues: what its dispatcher needs to start and size
  # executions of each queue's job.
  dispatch_queues = {
    for name, queue in local.queues : name => {
      job                = queue.job_name
      max_tasks          = queue.max_tasks
      backlog_per_task   = queue.backlog_per_task
      max_concurrency    = queue.max_concurrency
      worker_concurrency = queue.worker_concurrency
    }
  }

  # Cloud Logging's filter for the lines of every queue's worker.
  worker_logs = "resource.type=\"cloud_run_job\" AND resource.labels.job_name=(${join(" OR ", [for queue in values(local.queues) : "\"${queue.job_name}\""])})"

  # Periodic task types by name (var.periodic_tasks is a list, as `taskctl schedules export`
  # prints it).
  periodic_tasks = {
    for task in var.periodic_tasks : task.task_type => merge(task, {
      timezone = coalesce(task.timezone, var.schedule_time_zone)
    })
  }
}

# Checks that need the resolved queues, so they cannot be variable validations. Each is a
# precondition of the resources it would break, so `terraform plan` stops on it.
locals {
  queue_problems = flatten([
    for name, queue in local.queues : concat(
      queue.max_concurrency < queue.worker_concurrency ? ["${name}: max_concurrency (${queue.max_concurrency}) is below worker_concurrency (${queue.worker_concurrency}), so not one container could run"] : [],
      queue.task_count > queue.max_tasks ? ["${name}: task_count (${queue.task_count}) is above max_tasks (${queue.max_tasks})"] : [],
      # Cloud Run job names: lower-case letters, digits and '-', at most 63, no '-' at the end.
      can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", queue.job_name)) ? [] : ["${name}: the job name ${queue.job_name} is no Cloud Run job name (at most 63 lower-case letters, digits or '-', ending in a letter or digit)"],
      # Every queue dead-letters into the one DLQ: a queue topic of that name would be it.
      queue.topic_name == var.dlq_topic_name ? ["${name}: its topic ${queue.topic_name} is the dead-letter topic"] : [],
      queue.subscription_name == var.dlq_subscription_name ? ["${name}: its subscription ${queue.subscription_name} is the dead-letter subscription"] : [],
    )
  ])

  periodic_task_problems = [
    for name, task in local.periodic_tasks : "${name} is routed to queue ${task.queue}, which var.queues does not declare"
    if !contains(keys(local.queues), task.queue)
  ]
}
