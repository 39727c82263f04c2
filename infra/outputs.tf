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
    project                = var.project_id
    region                 = var.region
    api_service            = google_cloud_run_v2_service.api.name
    worker_job             = google_cloud_run_v2_job.worker.name
    worker_schedule        = google_cloud_scheduler_job.run_worker.name
    topic                  = google_pubsub_topic.tasks.name
    subscription           = google_pubsub_subscription.worker.name
    dlq_topic              = google_pubsub_topic.dlq.name
    dlq_subscription       = google_pubsub_subscription.dlq.name
    bucket                 = google_storage_bucket.tasks.name
    api_service_account    = google_service_account.api.email
    worker_service_account = google_service_account.worker.email
    scheduled_publishers   = [for job in google_cloud_scheduler_job.publish_task : job.name]
  }
}

output "next_steps" {
  description = "Commands to run next."
  value       = <<-EOT
    # Submit a task (an identity token of an account with run.invoker):
    curl -X POST ${google_cloud_run_v2_service.api.uri}/submit-task \
      -H "Authorization: Bearer $(gcloud auth print-identity-token)" \
      -H 'Content-Type: application/json' \
      -d '{"task_type":"data_transformation","transformation":"normalize","dataset_size":100}'

    # Run the worker now instead of waiting for the schedule (${var.worker_schedule}):
    gcloud run jobs execute ${google_cloud_run_v2_job.worker.name} --region ${var.region} --project ${var.project_id} --wait

    # Read the worker's logs:
    gcloud logging read 'resource.type="cloud_run_job" AND resource.labels.job_name="${google_cloud_run_v2_job.worker.name}"' --project ${var.project_id} --limit 50 --freshness 1h

    # See and replay dead letters:
    gcloud pubsub subscriptions pull ${google_pubsub_subscription.dlq.name} --project ${var.project_id} --limit 10
    GOOGLE_CLOUD_PROJECT=${var.project_id} TOPIC_NAME=${google_pubsub_topic.tasks.name} SUBSCRIPTION_NAME=${google_pubsub_subscription.worker.name} DLQ_TOPIC_NAME=${google_pubsub_topic.dlq.name} DLQ_SUBSCRIPTION_NAME=${google_pubsub_subscription.dlq.name} BUCKET_NAME=${google_storage_bucket.tasks.name} taskctl dlq replay
  EOT
}
