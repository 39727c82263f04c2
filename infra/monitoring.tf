# Log-based metrics from the worker's structured logs, and the alerts that matter.
#
# The worker writes one JSON line per record (google-cloud-logging StructuredLogHandler);
# Cloud Logging stores them as jsonPayload. Every message ends in one outcome line whose
# `event` and fields are defined in shared/taskcore/events.py (Event, EVENT_FIELDS): the
# filters below use only those values, and tests/infra and tests/integration/test_log_events.py
# hold them to that module and to the worker's real lines.

# local.worker_logs (queues.tf) selects the lines of every queue's worker job.
locals {
  alert_channels = concat(
    var.notification_channels,
    google_monitoring_notification_channel.email[*].id,
  )
}

resource "google_logging_metric" "tasks_succeeded" {
  project     = var.project_id
  name        = "task_pipeline/tasks_succeeded"
  description = "Tasks the worker completed, by task type."
  filter      = "${local.worker_logs} AND jsonPayload.event=\"task_succeeded\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "task_type"
      value_type  = "STRING"
      description = "Task type."
    }
  }

  label_extractors = {
    task_type = "EXTRACT(jsonPayload.task_type)"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "tasks_failed" {
  project     = var.project_id
  name        = "task_pipeline/tasks_failed"
  description = "Task attempts that failed: to be retried (task_retried) or given up and dead-lettered (task_dead_lettered), by task type and error type."
  filter      = "${local.worker_logs} AND (jsonPayload.event=\"task_retried\" OR jsonPayload.event=\"task_dead_lettered\")"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "task_type"
      value_type  = "STRING"
      description = "Task type."
    }
    labels {
      key         = "error_type"
      value_type  = "STRING"
      description = "Error class the worker reported."
    }
    labels {
      key         = "event"
      value_type  = "STRING"
      description = "task_retried (will run again) or task_dead_lettered (given up)."
    }
  }

  label_extractors = {
    task_type  = "EXTRACT(jsonPayload.task_type)"
    error_type = "EXTRACT(jsonPayload.error_type)"
    event      = "EXTRACT(jsonPayload.event)"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "task_duration" {
  project     = var.project_id
  name        = "task_pipeline/task_duration_ms"
  description = "Duration of task attempts, by task type and outcome."
  filter      = "${local.worker_logs} AND (jsonPayload.event=\"task_succeeded\" OR jsonPayload.event=\"task_retried\" OR jsonPayload.event=\"task_dead_lettered\") AND jsonPayload.duration_ms>=0"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "ms"

    labels {
      key         = "task_type"
      value_type  = "STRING"
      description = "Task type."
    }
    labels {
      key         = "event"
      value_type  = "STRING"
      description = "task_succeeded, task_retried or task_dead_lettered."
    }
  }

  value_extractor = "EXTRACT(jsonPayload.duration_ms)"
  label_extractors = {
    task_type = "EXTRACT(jsonPayload.task_type)"
    event     = "EXTRACT(jsonPayload.event)"
  }

  # 1 ms to about 9 hours, doubling.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 25
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == "" ? 0 : 1

  project      = var.project_id
  display_name = "Task pipeline alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "dlq_backlog" {
  project               = var.project_id
  display_name          = "Task pipeline: dead letters waiting in ${var.dlq_subscription_name}"
  combiner              = "OR"
  notification_channels = local.alert_channels

  conditions {
    display_name = "DLQ backlog above 0"

    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dlq.name}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Tasks failed for good and wait in `${google_pubsub_subscription.dlq.name}`. Inspect them with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dlq.name} --limit 10` (no --auto-ack), fix the cause, then replay them: `taskctl dlq replay --all --dry-run`, then without `--dry-run`, or narrowed with `--task-type`, `--error` or `--since` (docs/deploy.md, dead letters). Dead letters are kept ${var.dlq_retention_days} days."
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "oldest_unacked" {
  for_each = local.queues

  project               = var.project_id
  display_name          = "Task pipeline: tasks waiting too long in ${each.value.subscription_name}"
  combiner              = "OR"
  notification_channels = local.alert_channels

  conditions {
    display_name = "Oldest unacknowledged task older than ${each.value.oldest_unacked_alert_seconds}s"

    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.worker[each.key].name}\" AND metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.oldest_unacked_alert_seconds
      duration        = "300s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Queue `${each.key}`'s worker is not keeping up, or not running. Check the `${each.value.job_name}` executions (`gcloud run jobs executions list --job ${each.value.job_name} --region ${var.region}`) and the `${var.api_service_name}-tick` scheduler job, which starts them; if executions run but the backlog grows, raise the queue's max_tasks or max_concurrency (docs/capacity.md)."
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "job_failures" {
  for_each = local.queues

  project               = var.project_id
  display_name          = "Task pipeline: ${each.value.job_name} executions failed"
  combiner              = "OR"
  notification_channels = local.alert_channels

  conditions {
    display_name = "Failed job executions"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"${google_cloud_run_v2_job.worker[each.key].name}\" AND metric.type=\"run.googleapis.com/job/completed_execution_count\" AND metric.labels.result=\"failed\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A worker execution of queue `${each.key}` exited non-zero (infrastructure unreachable) or hit its task timeout. Read its logs: `gcloud run jobs executions list --job ${each.value.job_name} --region ${var.region}` (docs/deploy.md)."
  }

  depends_on = [google_project_service.enabled]
}

# Failing attempts before anything reaches the DLQ: a retried task takes up to
# max_delivery_attempts backoffs (tens of minutes) to be dead-lettered, and a broken
# dependency fails every task meanwhile. Counts task_retried and task_dead_lettered lines.
resource "google_monitoring_alert_policy" "task_failures" {
  count = var.failed_attempts_alert_threshold == null ? 0 : 1

  project               = var.project_id
  display_name          = "Task pipeline: task attempts failing"
  combiner              = "OR"
  notification_channels = local.alert_channels

  conditions {
    display_name = "More than ${coalesce(var.failed_attempts_alert_threshold, 0)} failed attempts in 10 minutes"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_job\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.tasks_failed.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.failed_attempts_alert_threshold
      duration        = "0s"

      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Task attempts are failing (retried or dead-lettered). See which types and errors: Metrics Explorer, `logging/user/${google_logging_metric.tasks_failed.name}` by `task_type` and `error_type`, or `gcloud logging read 'resource.type=\"cloud_run_job\" AND jsonPayload.event=(\"task_retried\" OR \"task_dead_lettered\")' --freshness 1h` (docs/deploy.md, logs)."
  }

  depends_on = [google_project_service.enabled]
}
