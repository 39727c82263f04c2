"""The permission contract: what each service account's code calls, and what its roles grant.

Emulators enforce no IAM, so a call the granted roles do not cover works in every test and
fails in production with 403. This module holds the three tables the contract is checked
with, each from Google's reference:

- ROLE_PERMISSIONS: the permissions of every predefined role infra/iam.tf grants
  (https://cloud.google.com/iam/docs/roles-permissions/pubsub, .../storage, .../run,
  .../secretmanager; the same lists `gcloud iam roles describe ROLE` prints);
- METHOD_PERMISSIONS: the permission each API method needs on its resource
  (https://cloud.google.com/pubsub/docs/access-control,
  https://cloud.google.com/storage/docs/access-control/iam-json,
  https://cloud.google.com/run/docs/reference/iam/permissions);
- CALLS: the methods each account's code path calls, on which resource. The API and worker
  entries are checked against their real traffic (tests/infra/test_permissions.py records
  every RPC and Cloud Storage request while they run against the emulators): a call missing
  here fails that test, so this list cannot silently fall behind the code.

Resources are named by the environment variable that names them to the code (TOPIC_NAME,
...); infra/run.tf sets each from one Terraform resource, which is how a call is matched
with the grants on that resource.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from taskcore.settings import Settings

# --- roles (only those infra/iam.tf grants, plus the usual least-privilege alternatives) ----

ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.subscriber": frozenset(
        {
            "pubsub.snapshots.seek",
            "pubsub.subscriptions.consume",
            "pubsub.topics.attachSubscription",
        }
    ),
    "roles/pubsub.viewer": frozenset(
        {
            "pubsub.messageTransforms.validate",
            "pubsub.schemas.get",
            "pubsub.schemas.list",
            "pubsub.schemas.listRevisions",
            "pubsub.schemas.validate",
            "pubsub.snapshots.get",
            "pubsub.snapshots.list",
            "pubsub.subscriptions.get",
            "pubsub.subscriptions.list",
            "pubsub.topics.get",
            "pubsub.topics.list",
            "resourcemanager.projects.get",
            "serviceusage.quotas.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
        }
    ),
    "roles/storage.objectUser": frozenset(
        {
            "orgpolicy.policy.get",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.folders.create",
            "storage.folders.delete",
            "storage.folders.get",
            "storage.folders.list",
            "storage.folders.rename",
            "storage.managedFolders.create",
            "storage.managedFolders.delete",
            "storage.managedFolders.get",
            "storage.managedFolders.list",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.create",
            "storage.multipartUploads.list",
            "storage.multipartUploads.listParts",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.move",
            "storage.objects.restore",
            "storage.objects.update",
        }
    ),
    "roles/storage.objectViewer": frozenset(
        {
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.folders.get",
            "storage.folders.list",
            "storage.managedFolders.get",
            "storage.managedFolders.list",
            "storage.objects.get",
            "storage.objects.list",
        }
    ),
    # Creates only: it cannot read, and cannot overwrite (that needs storage.objects.delete).
    "roles/storage.objectCreator": frozenset(
        {
            "orgpolicy.policy.get",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.folders.create",
            "storage.managedFolders.create",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.create",
            "storage.multipartUploads.listParts",
            "storage.objects.create",
            "storage.objects.createContext",
        }
    ),
    "roles/run.invoker": frozenset({"run.jobs.run", "run.routes.invoke"}),
    "roles/secretmanager.secretAccessor": frozenset(
        {
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "secretmanager.versions.access",
        }
    ),
    "roles/iam.serviceAccountUser": frozenset(
        {
            "iam.serviceAccounts.actAs",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
        }
    ),
}

# --- methods -------------------------------------------------------------------------------

_PUBSUB = "google.pubsub.v1"

# Method -> permissions it needs on the resource it names.
METHOD_PERMISSIONS: Mapping[str, frozenset[str]] = {
    f"{_PUBSUB}.Publisher/Publish": frozenset({"pubsub.topics.publish"}),
    f"{_PUBSUB}.Publisher/GetTopic": frozenset({"pubsub.topics.get"}),
    f"{_PUBSUB}.Subscriber/Pull": frozenset({"pubsub.subscriptions.consume"}),
    f"{_PUBSUB}.Subscriber/StreamingPull": frozenset({"pubsub.subscriptions.consume"}),
    f"{_PUBSUB}.Subscriber/Acknowledge": frozenset({"pubsub.subscriptions.consume"}),
    f"{_PUBSUB}.Subscriber/ModifyAckDeadline": frozenset({"pubsub.subscriptions.consume"}),
    f"{_PUBSUB}.Subscriber/GetSubscription": frozenset({"pubsub.subscriptions.get"}),
    # Cloud Storage JSON API. An insert that may replace an existing object also needs
    # storage.objects.delete; one with ifGenerationMatch=0 can only create.
    "storage.objects.get": frozenset({"storage.objects.get"}),
    "storage.objects.list": frozenset({"storage.objects.list"}),
    "storage.objects.insert": frozenset({"storage.objects.create", "storage.objects.delete"}),
    "storage.objects.insert?ifGenerationMatch=0": frozenset({"storage.objects.create"}),
    "storage.objects.delete": frozenset({"storage.objects.delete"}),
    "storage.objects.patch": frozenset({"storage.objects.update"}),
    "storage.objects.rewrite": frozenset(
        {"storage.objects.get", "storage.objects.create", "storage.objects.delete"}
    ),
    "storage.objects.compose": frozenset(
        {"storage.objects.get", "storage.objects.create", "storage.objects.delete"}
    ),
    "storage.buckets.get": frozenset({"storage.buckets.get"}),
    # Chunks of a resumable upload: the permission was checked when the upload started.
    "storage.objects.insert(resumable chunk)": frozenset(),
    # Cloud Run Admin API, Jobs.RunJob without overrides (the scheduler's POST .../jobs/X:run).
    "run.jobs.run": frozenset({"run.jobs.run"}),
    # Cloud Run resolves a `secret_key_ref` env var as the revision's service account.
    "secretmanager.versions.access": frozenset({"secretmanager.versions.access"}),
    # Cloud Monitoring API v3 projects.timeSeries.list (the dashboard's Pub/Sub backlog).
    "monitoring.timeSeries.list": frozenset({"monitoring.timeSeries.list"}),
}

# Permissions that exist only on the project (no finer resource has an IAM policy for them):
# the one case where infra/iam.tf grants on the project, through a custom role holding these.
PROJECT_ONLY_PERMISSIONS = frozenset({"monitoring.timeSeries.list"})
# How a call on the project (GOOGLE_CLOUD_PROJECT) and a grant on it are addressed.
PROJECT_ADDRESS = "var.project_id"


@dataclass(frozen=True, order=True)
class Call:
    """One method called on one resource: the env var naming it, or a Terraform address."""

    method: str
    resource: str

    def __str__(self) -> str:
        return f"{self.method} on {self.resource}"


def _calls(*methods: str, on: str) -> set[Call]:
    return {Call(method, on) for method in methods}


_CONSUME = (
    f"{_PUBSUB}.Subscriber/Pull",
    f"{_PUBSUB}.Subscriber/Acknowledge",
    f"{_PUBSUB}.Subscriber/ModifyAckDeadline",
)
_OBJECTS = (
    "storage.objects.get",
    "storage.objects.list",
    "storage.objects.insert",
    "storage.objects.insert?ifGenerationMatch=0",
    "storage.objects.delete",
    "storage.objects.insert(resumable chunk)",
)

# What each runtime account's code calls. Keys are the Terraform names of the Cloud Run
# service ("api") and job ("worker") whose service account runs the code.
CALLS: Mapping[str, frozenset[Call]] = {
    "api": frozenset(
        # Submissions, and the admin's replays.
        _calls(f"{_PUBSUB}.Publisher/Publish", on="TOPIC_NAME")
        # GET /ready.
        | _calls(f"{_PUBSUB}.Publisher/GetTopic", on="TOPIC_NAME")
        # The admin's DLQ browse, replay and purge.
        | _calls(*_CONSUME, on="DLQ_SUBSCRIPTION_NAME")
        # The admin's backlog display.
        | _calls(f"{_PUBSUB}.Subscriber/GetSubscription", on="SUBSCRIPTION_NAME")
        | _calls(f"{_PUBSUB}.Subscriber/GetSubscription", on="DLQ_SUBSCRIPTION_NAME")
        # Uploads, status records, idempotency records, DLQ archives and audit records.
        | _calls(*_OBJECTS, on="BUCKET_NAME")
        # The dashboard's backlog per subscription, from Pub/Sub's metrics (taskcore.backlog).
        | _calls("monitoring.timeSeries.list", on="GOOGLE_CLOUD_PROJECT")
    ),
    "worker": frozenset(
        _calls(*_CONSUME, on="SUBSCRIPTION_NAME")
        # Dead letters with their reason.
        | _calls(f"{_PUBSUB}.Publisher/Publish", on="DLQ_TOPIC_NAME")
        # A task whose delivery count nears the limit goes back as a fresh message.
        | _calls(f"{_PUBSUB}.Publisher/Publish", on="TOPIC_NAME")
        # Inputs, outputs (create-only) and status records.
        | _calls(*_OBJECTS, on="BUCKET_NAME")
    ),
}

# Calls the client libraries make on their own that the roles deliberately do not allow:
# the library expects the 403 and carries on. test_permission_traffic.py checks the library
# still does, so an upgrade that starts to depend on the answer fails there.
TOLERATED_DENIALS: Mapping[str, str] = {
    "storage.buckets.get": (
        "google-cloud-storage's trace-span metadata cache (_bucket_metadata_cache) reads the "
        "bucket once per client in a background thread, and checks it still exists after a "
        "404; on 403 it caches a fallback. Granting storage.buckets.get would only enrich "
        "trace attributes. DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA=true stops the call."
    ),
}

# --- naming the resources a request touches ------------------------------------------------

# The env vars that name a Pub/Sub resource or the bucket to the code, by the path segment
# that resource type has in a Pub/Sub resource name.
PUBSUB_RESOURCE_ENV = {
    "TOPIC_NAME": "topics",
    "DLQ_TOPIC_NAME": "topics",
    "SUBSCRIPTION_NAME": "subscriptions",
    "DLQ_SUBSCRIPTION_NAME": "subscriptions",
}
BUCKET_ENV = "BUCKET_NAME"


def resource_names(settings: Settings) -> dict[str, str]:
    """Full resource name (or bucket name) -> the env var that names it, for these settings."""
    env = settings.as_environ()
    names = {
        f"projects/{settings.project_id}/{kind}/{env[var]}": var
        for var, kind in PUBSUB_RESOURCE_ENV.items()
    }
    names[env[BUCKET_ENV]] = BUCKET_ENV
    return names


# (path prefix, HTTP method, path after the bucket with the object name as "*") -> method.
_GCS_ROUTES = {
    ("", "GET", ()): "storage.buckets.get",
    ("", "GET", ("o",)): "storage.objects.list",
    ("", "GET", ("o", "*")): "storage.objects.get",
    ("", "DELETE", ("o", "*")): "storage.objects.delete",
    ("", "PATCH", ("o", "*")): "storage.objects.patch",
    ("", "PUT", ("o", "*")): "storage.objects.patch",
    ("", "POST", ("o", "*", "compose")): "storage.objects.compose",
    ("download", "GET", ("o", "*")): "storage.objects.get",
    ("upload", "POST", ("o",)): "storage.objects.insert",
    ("upload", "PUT", ("o",)): "storage.objects.insert(resumable chunk)",
}


def gcs_method(http_method: str, raw_path: str, query: str) -> tuple[str, str | None]:
    """(JSON API method, bucket) of one Cloud Storage request; method "?" if unrecognised.

    raw_path is still percent-encoded, so an object name with slashes stays one segment.
    """
    segments = raw_path.strip("/").split("/")
    prefix = segments[0] if segments[0] in ("upload", "download") else ""
    if prefix:
        segments = segments[1:]
    if segments[:3] != ["storage", "v1", "b"] or len(segments) < 4:
        return "?", None
    bucket = urllib.parse.unquote(segments[3])
    rest = tuple("*" if i == 1 else s for i, s in enumerate(segments[4:]))
    if len(rest) >= 3 and rest[2] in ("rewriteTo", "copyTo") and http_method == "POST":
        return "storage.objects.rewrite", bucket
    method = _GCS_ROUTES.get((prefix, http_method, rest), "?")
    params = urllib.parse.parse_qs(query)
    if method == "storage.objects.insert" and params.get("ifGenerationMatch") == ["0"]:
        method = "storage.objects.insert?ifGenerationMatch=0"
    return method, bucket
