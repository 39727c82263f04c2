terraform {
  # `check` blocks (warnings that do not stop an apply) need 1.5.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.0 added deletion_protection to the Cloud Run v2 resources; nothing used here
      # changed in 7.x or 8.x.
      version = ">= 6.0, < 9.0"
    }
  }

  # State holds the names of everything below (no secret values). For a team, keep it in
  # a bucket, created beforehand:
  # backend "gcs" {
  #   bucket = "YOUR-PROJECT-tfstate"
  #   prefix = "task-pipeline"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    app = "task-pipeline"
  }
}
