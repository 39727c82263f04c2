output "api_url" {
  description = "URL of the API (callers need an identity token and roles/run.invoker)."
  value       = google_cloud_run_v2_service.api.uri
}

output "image_prefix" {
  description = "Push the images here: <prefix>/task-api:<tag> and <prefix>/background-worker:<tag>."
  value       = local.image_prefix
}

output "names" {
  description = "Names of everything the pipeline uses; the same values are the env vars of the code."
  value = {
    project     = var.project_id
    region      = var.region
    api_service = google_cloud_run_v2_service.api.name
    # The default queue's (TOPIC_NAME, SUBSCRIPTION_NAME); every queue's under queues.
    worker_job      = google_cloud_run_v2_job.worker["default"].name
    worker_schedule = try(google_cloud_scheduler_job.run_worker["default"].name, null)
    topic           = google_pubsub_topic.tasks["default"].name
    subscription    = google_pubsub_subscription.worker["default"].name
    queues = {
      for name, job in google_cloud_run_v2_job.worker : name => {
        job          = job.name
        topic        = google_pubsub_topic.tasks[name].name
        subscription = google_pubsub_subscription.worker[name].name
        schedule     = try(google_cloud_scheduler_job.run_worker[name].name, null)
      }
    }
    dispatch_tick          = google_cloud_scheduler_job.dispatch_tick.name
    periodic_tasks         = [for job in google_cloud_scheduler_job.periodic_task : job.name]
    dlq_topic              = google_pubsub_topic.dlq.name
    dlq_subscription       = google_pubsub_subscription.dlq.name
    bucket                 = google_storage_bucket.tasks.name
    api_service_account    = google_service_account.api.email
    worker_service_account = google_service_account.worker.email
    scheduled_publishers   = [for job in google_cloud_scheduler_job.publish_task : job.name]
  }
}

locals {
  # The default queue's job, in next_steps below.
  default_worker_job = google_cloud_run_v2_job.worker["default"].name

  # next_steps below, for the secrets api_secret_env actually wires.
  api_key_secret   = lookup(var.api_secret_env, "API_KEYS", "")
  admin_key_secret = lookup(var.api_secret_env, "ADMIN_API_KEYS", "")
  fetch_api_key = (
    local.api_key_secret == ""
    ? "API_KEY=none  # API_KEYS is not in api_secret_env: the submit routes need no key"
    : "API_KEY=$(gcloud secrets versions access latest --secret=${local.api_key_secret} --project ${var.project_id} | cut -d, -f1)"
  )
  open_dashboard = (
    local.admin_key_secret == ""
    ? "# The admin dashboard is off: ADMIN_API_KEYS is not in api_secret_env."
    : join("\n", [
      "# The admin dashboard: keep this running, open http://localhost:8081/admin and sign in",
      "# with a key from the secret ${local.admin_key_secret}:",
      "gcloud run services proxy ${google_cloud_run_v2_service.api.name} --region ${var.region} --project ${var.project_id} --port 8081",
    ])
  )
}

output "next_steps" {
  description = "Commands to run next (docs/deploy.md has them all, explained)."
  value       = <<-EOT
    # An identity token (of an account with run.invoker on the API) and a submit key:
    TOKEN=$(gcloud auth print-identity-token)
    ${local.fetch_api_key}

    # Submit a task:
    curl -X POST ${google_cloud_run_v2_service.api.uri}/submit-task \
      -H "Authorization: Bearer $TOKEN" -H "X-API-Key: $API_KEY" \
      -H 'Content-Type: application/json' \
      -d '{"task_type":"data_transformation","transformation":"normalize","dataset_size":100}'

    # The API starts worker executions within seconds of a submission; see them:
    gcloud run jobs executions list --job ${local.default_worker_job} --region ${var.region} --project ${var.project_id} --limit 5

    # Read the default queue's worker logs:
    gcloud logging read 'resource.type="cloud_run_job" AND resource.labels.job_name="${local.default_worker_job}"' --project ${var.project_id} --limit 50 --freshness 1h

    ${local.open_dashboard}

    # See dead letters, then replay some (from a checkout of this repository, after make install):
    gcloud pubsub subscriptions pull ${google_pubsub_subscription.dlq.name} --project ${var.project_id} --limit 10
    export GOOGLE_CLOUD_PROJECT=${var.project_id} TOPIC_NAME=${google_pubsub_topic.tasks["default"].name} SUBSCRIPTION_NAME=${google_pubsub_subscription.worker["default"].name} DLQ_TOPIC_NAME=${google_pubsub_topic.dlq.name} DLQ_SUBSCRIPTION_NAME=${google_pubsub_subscription.dlq.name} BUCKET_NAME=${google_storage_bucket.tasks.name}
    .venv/bin/taskctl dlq replay --all --dry-run
    .venv/bin/taskctl dlq replay --all
  EOT
}
