# The project, its APIs, and the names everything else derives.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  services = toset([
    "artifactregistry.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  bucket_name     = coalesce(var.bucket_name, "${var.project_id}-task-outputs")
  bucket_location = coalesce(var.bucket_location, var.region)

  image_prefix = "${var.region}-docker.pkg.dev/${var.project_id}/${var.artifact_repository_id}"
  api_image    = "${local.image_prefix}/task-api:${var.api_image_tag}"
  worker_image = "${local.image_prefix}/background-worker:${var.worker_image_tag}"

  # Pub/Sub's service agent: it, not our service accounts, moves a message to the
  # dead-letter topic, so it needs the two grants in iam.tf.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_project_service" "enabled" {
  for_each = local.services

  project = var.project_id
  service = each.value

  # Destroying this configuration leaves the APIs on: other things may use them.
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.artifact_repository_id
  format        = "DOCKER"
  description   = "Images of the task pipeline (task-api, background-worker)."

  depends_on = [google_project_service.enabled]
}
