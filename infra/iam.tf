# Identities and grants. Every grant is on one resource (topic, subscription, bucket, job,
# service, secret; a per-queue grant on each queue's), never on the project, except the one
# permission that exists only there: reading Pub/Sub's metrics for the dashboard's backlog (a
# custom role holding monitoring.timeSeries.list and nothing else).
# tests/infra/test_permissions.py maps every API call the API, the workers and the scheduler
# make to its IAM permission and checks these grants cover it, and that none is granted
# without a call that needs it.

resource "google_service_account" "api" {
  project      = var.project_id
  account_id   = "task-api"
  display_name = "Task pipeline API (Cloud Run service)"

  depends_on = [google_project_service.enabled]
}

# One account for every queue's job: the queues differ in capacity, not in trust (they run
# the same image), so it holds each queue's subscription and topic.
resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "task-worker"
  display_name = "Task pipeline worker (Cloud Run job)"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "task-worker-scheduler"
  display_name = "Cloud Scheduler: the dispatcher's tick, periodic tasks, the queues' safety-net runs"

  depends_on = [google_project_service.enabled]
}

# --- Pub/Sub's service agent: dead-lettering fails silently without both -------------------

# It publishes the dead letter to the DLQ topic...
resource "google_pubsub_topic_iam_member" "dlq_publisher_pubsub_agent" {
  project = var.project_id
  topic   = google_pubsub_topic.dlq.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

# ...and acknowledges it on the source subscription, every queue's.
resource "google_pubsub_subscription_iam_member" "worker_subscriber_pubsub_agent" {
  for_each = local.queues

  project      = var.project_id
  subscription = google_pubsub_subscription.worker[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# --- the API ---------------------------------------------------------------------------------

# Submissions go to their type's queue; the admin's replays return each dead letter to its own.
resource "google_pubsub_topic_iam_member" "api_publisher" {
  for_each = local.queues

  project = var.project_id
  topic   = google_pubsub_topic.tasks[each.key].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.api.member
}

# GET /ready reads the topic (pubsub.topics.get), which the publisher role does not include.
resource "google_pubsub_topic_iam_member" "api_topic_viewer" {
  project = var.project_id
  topic   = google_pubsub_topic.tasks["default"].name
  role    = "roles/pubsub.viewer"
  member  = google_service_account.api.member
}

# Status records and uploads: read, create, overwrite objects; no bucket administration.
resource "google_storage_bucket_iam_member" "api_objects" {
  bucket = google_storage_bucket.tasks.name
  role   = "roles/storage.objectUser"
  member = google_service_account.api.member
}

# The admin dashboard browses the DLQ and replays from it: it pulls (and acknowledges)
# dead letters, and publishes them again to the tasks topic (api_publisher above).
resource "google_pubsub_subscription_iam_member" "api_dlq_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.dlq.name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.api.member
}

# ...and shows backlog and configuration of the default queue's and the DLQ's subscriptions
# (read-only).
resource "google_pubsub_subscription_iam_member" "api_viewer" {
  for_each = {
    worker = google_pubsub_subscription.worker["default"].name
    dlq    = google_pubsub_subscription.dlq.name
  }

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.viewer"
  member       = google_service_account.api.member
}

# The dispatcher starts executions of each queue's job with overrides (task count, env,
# timeout). roles/run.invoker grants run.jobs.run but not run.jobs.runWithOverrides; this
# role grants both (and run.executions.cancel), nothing else, on the job it is granted on.
resource "google_cloud_run_v2_job_iam_member" "api_runs_queue_jobs" {
  for_each = local.queues

  project  = var.project_id
  location = google_cloud_run_v2_job.worker[each.key].location
  name     = google_cloud_run_v2_job.worker[each.key].name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = google_service_account.api.member
}

# ...and lists each job's executions to see what runs (run.executions.list, checked on the
# job named as the parent; listing across jobs with "-" would need it on the project).
# Read-only, on the job.
resource "google_cloud_run_v2_job_iam_member" "api_views_queue_jobs" {
  for_each = local.queues

  project  = var.project_id
  location = google_cloud_run_v2_job.worker[each.key].location
  name     = google_cloud_run_v2_job.worker[each.key].name
  role     = "roles/run.viewer"
  member   = google_service_account.api.member
}

# The dashboard's backlog per subscription is Pub/Sub's own count, which only Cloud
# Monitoring has (projects.timeSeries.list). Time series belong to the project, so this grant
# is on the project; the role holds that one read, where roles/monitoring.viewer would also
# read every dashboard, alert policy and uptime check.
resource "google_project_iam_custom_role" "metrics_reader" {
  project     = var.project_id
  role_id     = "taskPipelineMetricsReader"
  title       = "Task pipeline metrics reader"
  description = "Reads time series: the admin dashboard's Pub/Sub backlog."
  permissions = ["monitoring.timeSeries.list"]

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "api_metrics_reader" {
  project = var.project_id
  role    = google_project_iam_custom_role.metrics_reader.name
  member  = google_service_account.api.member
}

resource "google_secret_manager_secret_iam_member" "api_secrets" {
  for_each = var.api_secret_env

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.api.member
}

# --- the worker ------------------------------------------------------------------------------

# Pull, acknowledge and extend leases, on every queue's subscription (one account for all the
# queues' jobs). It grants no subscriptions.get: the worker reads the ack deadline and
# attempt limit from its settings, never from the subscription.
resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  for_each = local.queues

  project      = var.project_id
  subscription = google_pubsub_subscription.worker[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.worker.member
}

# The worker dead-letters poison messages itself, with the reason as attributes.
resource "google_pubsub_topic_iam_member" "worker_dlq_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dlq.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.worker.member
}

# A message whose Pub/Sub delivery count reaches half of pubsub_max_delivery_attempts (its
# deliveries lost to crashes or released, not failed) goes back to its queue's topic as a
# fresh message, so Pub/Sub's dead-letter policy does not take it.
resource "google_pubsub_topic_iam_member" "worker_tasks_publisher" {
  for_each = local.queues

  project = var.project_id
  topic   = google_pubsub_topic.tasks[each.key].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.worker.member
}

resource "google_storage_bucket_iam_member" "worker_objects" {
  bucket = google_storage_bucket.tasks.name
  role   = "roles/storage.objectUser"
  member = google_service_account.worker.member
}

resource "google_secret_manager_secret_iam_member" "worker_secrets" {
  for_each = var.worker_secret_env

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.worker.member
}

# --- the scheduler -----------------------------------------------------------------------------

# run.jobs.run on the jobs with a safety-net schedule (scheduler.tf), nothing else.
resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_worker" {
  for_each = local.scheduled_queues

  project  = var.project_id
  location = google_cloud_run_v2_job.worker[each.key].location
  name     = google_cloud_run_v2_job.worker[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

# The dispatcher's tick and the periodic tasks' firings are requests to the API's
# /internal/ routes, with the scheduler's identity token.
resource "google_cloud_run_v2_service_iam_member" "scheduler_invokes_api" {
  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

# --- who may call the API ------------------------------------------------------------------

resource "google_cloud_run_v2_service_iam_member" "api_invokers" {
  for_each = toset(var.api_invokers)

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = each.value
}

# Off by default: the API then answers only callers with an identity token and run.invoker.
resource "google_cloud_run_v2_service_iam_member" "api_public" {
  count = var.allow_unauthenticated_api ? 1 : 0

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

check "api_is_not_public" {
  assert {
    condition     = !var.allow_unauthenticated_api
    error_message = "WARNING: allow_unauthenticated_api = true: anyone on the internet can submit tasks to ${var.api_service_name}. Set it to false unless the API does its own authentication."
  }
}
