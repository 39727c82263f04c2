# Topics and subscriptions: one topic and one pull subscription per queue, one dead-letter
# topic and subscription for all. The code reads the same names and limits (run.tf).

resource "google_pubsub_topic" "tasks" {
  for_each = local.queues

  project = var.project_id
  name    = each.value.topic_name

  depends_on = [google_project_service.enabled]

  lifecycle {
    precondition {
      condition     = length(local.queue_problems) == 0
      error_message = join("; ", local.queue_problems)
    }
  }
}

resource "google_pubsub_topic" "dlq" {
  project = var.project_id
  name    = var.dlq_topic_name

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "worker" {
  for_each = local.queues

  project = var.project_id
  name    = each.value.subscription_name
  topic   = google_pubsub_topic.tasks[each.key].id

  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "604800s" # 7 days
  retain_acked_messages      = false

  # No retry_policy: the worker applies the backoff itself (RETRY_*_BACKOFF_SECONDS, sent as
  # modifyAckDeadline) from its own count of the task's failures.

  # The safety net: after pubsub_max_delivery_attempts deliveries Pub/Sub's service agent
  # forwards a message the worker never settled to the DLQ topic, whatever its queue (a
  # replay returns each dead letter to its own queue). The worker dead-letters a task itself,
  # with its reason, once it has failed MAX_DELIVERY_ATTEMPTS times of its own (far below
  # this), and re-publishes a message as a fresh one from half of this many deliveries, so
  # deliveries lost to crashes never bring a task here.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dlq.id
    max_delivery_attempts = var.pubsub_max_delivery_attempts
  }

  lifecycle {
    precondition {
      # Below it, Pub/Sub would dead-letter tasks before their own failures could, without
      # a reason (the code refuses such settings too).
      condition     = var.pubsub_max_delivery_attempts > var.max_delivery_attempts
      error_message = "pubsub_max_delivery_attempts must be above max_delivery_attempts."
    }
  }

  # A subscription nobody pulls for 31 days is deleted by default; a queue may stay idle
  # longer than that.
  expiration_policy {
    ttl = ""
  }
}

# A topic without a subscription drops what is published to it: this one keeps dead letters
# until an operator replays (`taskctl dlq replay`) or acknowledges them.
resource "google_pubsub_subscription" "dlq" {
  project = var.project_id
  name    = var.dlq_subscription_name
  topic   = google_pubsub_topic.dlq.id

  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dlq_retention_days * 86400}s"
  retain_acked_messages      = false

  # Rarely pulled by design, so it must never expire.
  expiration_policy {
    ttl = ""
  }
}
