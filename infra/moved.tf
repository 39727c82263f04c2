# Before queues, these were single resources: the default queue's are the same objects under
# a key, so an upgrade moves them in the state instead of destroying and creating them (a
# new subscription would start empty, dropping every queued task).

moved {
  from = google_pubsub_topic.tasks
  to   = google_pubsub_topic.tasks["default"]
}

moved {
  from = google_pubsub_subscription.worker
  to   = google_pubsub_subscription.worker["default"]
}

moved {
  from = google_cloud_run_v2_job.worker
  to   = google_cloud_run_v2_job.worker["default"]
}

moved {
  from = google_cloud_scheduler_job.run_worker
  to   = google_cloud_scheduler_job.run_worker["default"]
}

moved {
  from = google_pubsub_topic_iam_member.api_publisher
  to   = google_pubsub_topic_iam_member.api_publisher["default"]
}

moved {
  from = google_pubsub_topic_iam_member.worker_tasks_publisher
  to   = google_pubsub_topic_iam_member.worker_tasks_publisher["default"]
}

moved {
  from = google_pubsub_subscription_iam_member.worker_subscriber
  to   = google_pubsub_subscription_iam_member.worker_subscriber["default"]
}

moved {
  from = google_pubsub_subscription_iam_member.worker_subscriber_pubsub_agent
  to   = google_pubsub_subscription_iam_member.worker_subscriber_pubsub_agent["default"]
}

moved {
  from = google_cloud_run_v2_job_iam_member.scheduler_runs_worker
  to   = google_cloud_run_v2_job_iam_member.scheduler_runs_worker["default"]
}

moved {
  from = google_monitoring_alert_policy.oldest_unacked
  to   = google_monitoring_alert_policy.oldest_unacked["default"]
}

moved {
  from = google_monitoring_alert_policy.job_failures
  to   = google_monitoring_alert_policy.job_failures["default"]
}
