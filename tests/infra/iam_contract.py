"""The permission contract: what each service account's code calls, and what its roles grant.

Emulators enforce no IAM, so a call the granted roles do not cover works in every test and
fails in production with 403. This module holds the three tables the contract is checked
with, each from Google's reference:

- ROLE_PERMISSIONS (in iam_roles.py): the permissions of every predefined role infra/iam.tf
  grants (https://cloud.google.com/iam/docs/roles-permissions/pubsub, .../storage, .../run,
  .../monitoring, .../secretmanager; the same lists `gcloud iam roles describe ROLE` prints);
- METHOD_PERMISSIONS: the permission each API method needs on its resource
  (https://cloud.google.com/pubsub/docs/access-control,
  https://cloud.google.com/storage/docs/access-control/iam-json,
  https://cloud.google.com/run/docs/reference/iam/permissions, and each method's REST
  reference: "Authorization requires the following IAM permission on the specified
  resource");
- CALLS: the methods each account's code path calls, on which resource. The API and worker
  entries are checked against their real traffic (tests/infra/test_permissions.py records
  every RPC and Cloud Storage request while they run against the emulators): a call missing
  here fails that test, so this list cannot silently fall behind the code.

Resources are named by the environment variable that names them to the code (TOPIC_NAME,
...); infra/run.tf sets each from one Terraform resource, which is how a call is matched
with the grants on that resource. Every queue has its own topic, subscription and job, named
by the code from TOPIC_NAME, SUBSCRIPTION_NAME and the queue name: EVERY_QUEUE_TOPIC and its
kin name all of them at once (a call on TOPIC_NAME is a call on one of them).
"""

from __future__ import annotations

import importlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from taskcore.settings import Settings

# --- methods -------------------------------------------------------------------------------

_PUBSUB = "google.pubsub.v1"
_RUN = "google.cloud.run.v2"
# A RunJob request that carries overrides (task count, env, timeout) is its own method here:
# it needs one more permission (run.jobs.runWithOverrides, checked on the job).
RUN_WITH_OVERRIDES = f"{_RUN}.Jobs/RunJob?overrides"

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
    # Cloud Run Admin API: RunJob without overrides (the scheduler's POST .../jobs/X:run) and
    # with them (the dispatcher's), on the job; ListExecutions on the job named as the parent.
    f"{_RUN}.Jobs/RunJob": frozenset({"run.jobs.run"}),
    RUN_WITH_OVERRIDES: frozenset({"run.jobs.run", "run.jobs.runWithOverrides"}),
    f"{_RUN}.Executions/ListExecutions": frozenset({"run.executions.list"}),
    f"{_RUN}.Executions/GetExecution": frozenset({"run.executions.get"}),
    # An HTTP request to a Cloud Run service with an identity token (Cloud Scheduler's).
    "run.routes.invoke": frozenset({"run.routes.invoke"}),
    # Cloud Run resolves a `secret_key_ref` env var as the revision's service account.
    "secretmanager.versions.access": frozenset({"secretmanager.versions.access"}),
    # Cloud Monitoring API v3 projects.timeSeries.list (REST; the resource is the project).
    "monitoring.timeSeries.list": frozenset({"monitoring.timeSeries.list"}),
}

# Permissions that exist only on the project (no finer resource has an IAM policy for them):
# the one case where infra/iam.tf grants on the project, through a custom role holding these.
PROJECT_ONLY_PERMISSIONS = frozenset({"monitoring.timeSeries.list"})


# Resources named by more than one env var, or by none.
EVERY_QUEUE_TOPIC = "TOPIC_NAME[queue]"  # TOPIC_NAME, and <TOPIC_NAME>-<queue> for each other
EVERY_QUEUE_SUBSCRIPTION = "SUBSCRIPTION_NAME[queue]"  # likewise from SUBSCRIPTION_NAME
EVERY_QUEUE_JOB = "QUEUES[queue].job"  # the job QUEUES names for each queue, in RUN_REGION
PROJECT = "GOOGLE_CLOUD_PROJECT"  # the project itself
# What each of them contains that is also named on its own.
CONTAINS: Mapping[str, frozenset[str]] = {
    EVERY_QUEUE_TOPIC: frozenset({"TOPIC_NAME"}),
    EVERY_QUEUE_SUBSCRIPTION: frozenset({"SUBSCRIPTION_NAME"}),
}


@dataclass(frozen=True, order=True)
class Call:
    """One method called on one resource: the env var naming it, or a Terraform address."""

    method: str
    resource: str

    def __str__(self) -> str:
        return f"{self.method} on {self.resource}"

    def listed_in(self, calls: frozenset[Call] | set[Call]) -> bool:
        """Whether calls has this call, itself or on a set of resources holding its resource."""
        return self in calls or any(
            Call(self.method, every) in calls
            for every, members in CONTAINS.items()
            if self.resource in members
        )


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
        # Submissions, to their type's queue, and the admin's replays, each to its own queue.
        _calls(f"{_PUBSUB}.Publisher/Publish", on=EVERY_QUEUE_TOPIC)
        # GET /ready.
        | _calls(f"{_PUBSUB}.Publisher/GetTopic", on="TOPIC_NAME")
        # The admin's DLQ browse, replay and purge.
        | _calls(*_CONSUME, on="DLQ_SUBSCRIPTION_NAME")
        # The admin's backlog display.
        | _calls(f"{_PUBSUB}.Subscriber/GetSubscription", on="SUBSCRIPTION_NAME")
        | _calls(f"{_PUBSUB}.Subscriber/GetSubscription", on="DLQ_SUBSCRIPTION_NAME")
        # Uploads, status records, idempotency records, DLQ archives and audit records.
        | _calls(*_OBJECTS, on="BUCKET_NAME")
        # The dispatcher: starts executions of a queue's job with overrides, lists (and reads)
        # the executions to see what runs. (It reads no Pub/Sub backlog metric: its estimate
        # comes from the tasks it accepts and the waits workers report, taskcore.demand.)
        | _calls(
            RUN_WITH_OVERRIDES,
            f"{_RUN}.Executions/ListExecutions",
            f"{_RUN}.Executions/GetExecution",
            on=EVERY_QUEUE_JOB,
        )
        # The dashboard's backlog per subscription, from Pub/Sub's metrics (taskcore.backlog).
        | _calls("monitoring.timeSeries.list", on=PROJECT)
    ),
    # One account runs every queue's job: what one queue's worker calls on its own queue,
    # the account calls on every queue.
    "worker": frozenset(
        _calls(*_CONSUME, on=EVERY_QUEUE_SUBSCRIPTION)
        # Dead letters with their reason.
        | _calls(f"{_PUBSUB}.Publisher/Publish", on="DLQ_TOPIC_NAME")
        # A task whose delivery count nears the limit goes back to its queue as a fresh message.
        | _calls(f"{_PUBSUB}.Publisher/Publish", on=EVERY_QUEUE_TOPIC)
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


def queue_table(env: Mapping[str, str]) -> dict[str, dict]:
    """QUEUES (queue name -> {"job": ..., ...}) as the environment carries it, JSON."""
    try:
        return json.loads(env.get("QUEUES") or "{}")
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"QUEUES is not JSON in Settings.as_environ(): {env.get('QUEUES')!r}"
        ) from exc


def queue_names(env: Mapping[str, str]) -> set[str]:
    """The queues these settings know: QUEUES' keys (the API), QUEUE (a worker), "default"."""
    return {"default", *queue_table(env), *filter(None, [env.get("QUEUE")])}


def resource_names(settings: Settings) -> dict[str, str]:
    """Full resource name (or bucket name) -> what the contract calls it, for these settings.

    Each queue's topic and subscription other than the default's is "<TOPIC_NAME>-<queue>"
    and "<SUBSCRIPTION_NAME>-<queue>"; a job is the one QUEUES names, in RUN_REGION.
    """
    env = settings.as_environ()
    project = f"projects/{settings.project_id}"
    names = {f"{project}/{kind}/{env[var]}": var for var, kind in PUBSUB_RESOURCE_ENV.items()}
    for queue in queue_names(env) - {"default"}:
        names[f"{project}/topics/{env['TOPIC_NAME']}-{queue}"] = EVERY_QUEUE_TOPIC
        names[f"{project}/subscriptions/{env['SUBSCRIPTION_NAME']}-{queue}"] = (
            EVERY_QUEUE_SUBSCRIPTION
        )
    for entry in queue_table(env).values():
        names[f"{project}/locations/{env.get('RUN_REGION')}/jobs/{entry['job']}"] = EVERY_QUEUE_JOB
    names[project] = PROJECT
    names[env[BUCKET_ENV]] = BUCKET_ENV
    return names


# The client library whose request types decode a gRPC service's requests.
_REQUEST_TYPES = {
    f"{_PUBSUB}.": "google.pubsub_v1.types",
    f"{_RUN}.": "google.cloud.run_v2.types",
    "google.monitoring.v3.": "google.cloud.monitoring_v3.types",
}


def grpc_call(method: str, request: bytes) -> tuple[str, str]:
    """(method as METHOD_PERMISSIONS names it, resource it names) of one gRPC request.

    The resource is "?" when the request cannot be decoded (its library is not installed,
    or the method is unknown). A RunJob with overrides is RUN_WITH_OVERRIDES.
    """
    service, _, name = method.rpartition("/")
    module = next((m for prefix, m in _REQUEST_TYPES.items() if service.startswith(prefix)), None)
    try:
        request_type = (
            getattr(importlib.import_module(module), name + "Request") if module else None
        )
    except ImportError:
        request_type = None
    if request_type is None:
        return method, "?"
    message = request_type.deserialize(request)
    if method == f"{_RUN}.Jobs/RunJob" and type(message).pb(message).HasField("overrides"):
        method = RUN_WITH_OVERRIDES
    for field_name in ("subscription", "topic", "name", "parent"):
        value = getattr(message, field_name, "")
        if value:
            return method, value
    return method, "?"


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
