# Cloud Scheduler: the dispatcher's tick, periodic task types, each queue's safety-net run,
# and (optionally) raw tasks published on a cron.

# The dispatcher's safety net: every minute the API starts the executions it could not start
# when tasks arrived (a failed Cloud Run call, an instance that stopped), and publishes the
# delayed tasks that came due. An OIDC identity token for the API's own URL: Cloud Run checks
# it, and the scheduler's account holds run.invoker on the service (iam.tf).
resource "google_cloud_scheduler_job" "dispatch_tick" {
  project          = var.project_id
  region           = var.region
  name             = "${var.api_service_name}-tick"
  description      = "Calls POST /internal/tick on ${var.api_service_name}: starts the executions the queues' backlogs need, publishes delayed tasks that came due."
  schedule         = var.dispatch_tick_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  # No retry: the next tick is a minute away and does the same.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.api.uri}/internal/tick"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloud_run_v2_service.api.uri
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_cloud_run_v2_service_iam_member.scheduler_invokes_api,
  ]
}

# One job per periodic task type (@task(schedule=...), var.periodic_tasks). Cloud Scheduler
# sends the firing's X-CloudScheduler-ScheduleTime, the same on every retry of one firing;
# the API derives the task id from it, so a retried or duplicated firing runs once.
resource "google_cloud_scheduler_job" "periodic_task" {
  for_each = local.periodic_tasks

  project          = var.project_id
  region           = var.region
  name             = "${var.api_service_name}-fire-${each.key}"
  description      = "Fires the periodic task type ${each.key} (queue ${each.value.queue}) through ${var.api_service_name}."
  schedule         = each.value.schedule
  time_zone        = each.value.timezone
  attempt_deadline = "60s" # the API answers once the task is published

  # A retry of the same firing is the same task: retrying is always safe.
  retry_config {
    retry_count          = 3
    min_backoff_duration = "10s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.api.uri}/internal/fire/${each.key}"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloud_run_v2_service.api.uri
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_cloud_run_v2_service_iam_member.scheduler_invokes_api,
  ]

  lifecycle {
    precondition {
      condition     = length(local.periodic_task_problems) == 0
      error_message = join("; ", local.periodic_task_problems)
    }
  }
}

# Each queue's safety net for when the API cannot dispatch at all: the Cloud Run Admin API's
# jobs.run on the queue's job, without overrides (the job's own task count), called with an
# OAuth access token of the scheduler's service account (a Google API takes an OAuth token,
# not an OIDC identity token). A queue with schedule = "" has none.
resource "google_cloud_scheduler_job" "run_worker" {
  for_each = local.scheduled_queues

  project          = var.project_id
  region           = var.region
  name             = "${each.value.job_name}-schedule"
  description      = "Runs the ${each.value.job_name} Cloud Run job, which drains ${each.value.subscription_name} (queue ${each.key})."
  schedule         = each.value.schedule
  time_zone        = var.schedule_time_zone
  attempt_deadline = "60s" # the call returns once the execution has started

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${google_cloud_run_v2_job.worker[each.key].location}/jobs/${google_cloud_run_v2_job.worker[each.key].name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_cloud_run_v2_job_iam_member.scheduler_runs_worker,
  ]
}

# Typed tasks published straight to a queue's topic (Cloud Scheduler's own service agent
# publishes). The body has no task_id, so the worker keys the task by its Pub/Sub message id
# (task_id "msg-<message_id>", shared/taskcore/envelope.py): each cron run is a new task,
# and redeliveries of one run are the same task. periodic_tasks, declared in code with the
# task type, are the better way; this remains for bodies that are data, not code.
resource "google_cloud_scheduler_job" "publish_task" {
  for_each = var.scheduled_tasks

  project     = var.project_id
  region      = var.region
  name        = "publish-${each.key}"
  description = "Publishes a ${jsondecode(each.value.task_json).task_type} task to queue ${each.value.queue}."
  schedule    = each.value.schedule
  time_zone   = coalesce(each.value.time_zone, var.schedule_time_zone)

  pubsub_target {
    # try: an undeclared queue fails the precondition below with its name, not an index error.
    topic_name = try(google_pubsub_topic.tasks[each.value.queue].id, null)
    data       = base64encode(each.value.task_json)
    attributes = {
      task_type = jsondecode(each.value.task_json).task_type
      source    = "cloud-scheduler"
    }
  }

  depends_on = [google_project_service.enabled]

  lifecycle {
    precondition {
      condition     = contains(keys(local.queues), each.value.queue)
      error_message = "scheduled_tasks.${each.key} publishes to queue ${each.value.queue}, which var.queues does not declare."
    }
  }
}
