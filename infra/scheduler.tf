# Cloud Scheduler: run the worker job on a cron, and (optionally) publish tasks on a cron.

# The Cloud Run Admin API's jobs.run, called with an OAuth access token of the scheduler's
# service account (a Google API takes an OAuth token, not an OIDC identity token).
resource "google_cloud_scheduler_job" "run_worker" {
  project          = var.project_id
  region           = var.region
  name             = "${var.worker_job_name}-schedule"
  description      = "Runs the ${var.worker_job_name} Cloud Run job, which drains ${var.subscription_name}."
  schedule         = var.worker_schedule
  time_zone        = var.schedule_time_zone
  attempt_deadline = "60s" # the call returns once the execution has started

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${google_cloud_run_v2_job.worker.location}/jobs/${google_cloud_run_v2_job.worker.name}:run"

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

# Typed tasks published straight to the topic (Cloud Scheduler's own service agent
# publishes). The body has no task_id, so the worker keys the task by its Pub/Sub message id
# (task_id "msg-<message_id>", shared/taskcore/envelope.py): each cron run is a new task,
# and redeliveries of one run are the same task.
resource "google_cloud_scheduler_job" "publish_task" {
  for_each = var.scheduled_tasks

  project     = var.project_id
  region      = var.region
  name        = "publish-${each.key}"
  description = "Publishes a ${jsondecode(each.value.task_json).task_type} task to ${var.topic_name}."
  schedule    = each.value.schedule
  time_zone   = coalesce(each.value.time_zone, var.schedule_time_zone)

  pubsub_target {
    topic_name = google_pubsub_topic.tasks.id
    data       = base64encode(each.value.task_json)
    attributes = {
      task_type = jsondecode(each.value.task_json).task_type
      source    = "cloud-scheduler"
    }
  }

  depends_on = [google_project_service.enabled]
}
