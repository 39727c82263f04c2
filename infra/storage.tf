# The bucket: uploads, outputs, status records, the transition journal and writers' stats,
# and the dead-letter archive.

resource "google_storage_bucket" "tasks" {
  project  = var.project_id
  name     = local.bucket_name
  location = local.bucket_location

  # IAM only, no object ACLs, and never public.
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.bucket_force_destroy

  # Uploaded inputs are working copies; outputs are kept.
  lifecycle_rule {
    condition {
      age            = var.uploads_retention_days
      matches_prefix = ["uploads/"]
    }
    action {
      type = "Delete"
    }
  }

  # Archived dead letters outlive the DLQ subscription's 31 days, but not forever.
  lifecycle_rule {
    condition {
      age            = var.dlq_archive_retention_days
      matches_prefix = ["dlq-archive/"]
    }
    action {
      type = "Delete"
    }
  }

  # Status records are the task history; each update rewrites the object, so the age counts
  # from a task's last state change.
  lifecycle_rule {
    condition {
      age            = var.status_retention_days
      matches_prefix = ["status/"]
    }
    action {
      type = "Delete"
    }
  }

  # The transition journal: the dashboard pages through its newest objects only; older ones
  # go with the status records they point to (each object is written once, so its age counts
  # from the flush that wrote it).
  lifecycle_rule {
    condition {
      age            = var.journal_retention_days
      matches_prefix = ["journal/"]
    }
    action {
      type = "Delete"
    }
  }

  # Per-writer stats: the overview reads the last two hours; a writer overwrites its own
  # object while it lives, so this removes the objects of writers long gone.
  lifecycle_rule {
    condition {
      age            = var.stats_retention_days
      matches_prefix = ["stats/"]
    }
    action {
      type = "Delete"
    }
  }

  # Idempotency-Key records only need to outlive a client's retries.
  lifecycle_rule {
    condition {
      age            = var.idempotency_retention_days
      matches_prefix = ["idempotency/"]
    }
    action {
      type = "Delete"
    }
  }

  # Dashboard sessions last 8 hours and sign-in codes minutes; the API deletes the ones it
  # sees end (logout, expiry, use), this removes the rest.
  lifecycle_rule {
    condition {
      age            = 1
      matches_prefix = ["admin-sessions/", "admin-sign-in-codes/"]
    }
    action {
      type = "Delete"
    }
  }

  # Multipart uploads a client abandoned still cost storage.
  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.enabled]
}

check "journal_outlives_no_record" {
  assert {
    condition     = var.journal_retention_days <= var.status_retention_days
    error_message = "journal_retention_days (${var.journal_retention_days}) exceeds status_retention_days (${var.status_retention_days}): the dashboard's task list will page through entries whose records are gone (it skips them, at a cost)."
  }
}
