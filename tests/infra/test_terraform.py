"""The reliability- and security-critical wiring of infra/, read from the HCL itself.

These run without providers or credentials: they cannot prove an apply works, but they fail
when a grant, a dead-letter link or an env var the code reads goes missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from iam_contract import PROJECT_ONLY_PERMISSIONS
from infra_contract import (
    INFRA,
    PLATFORM_PROVIDED,
    Terraform,
    block,
    expression,
    local_refs,
    member_of,
    only_ref,
    required_cloud_env,
    resource_refs,
    run_terraform,
    runtime_container,
    setting_default,
    strings,
    var_refs,
)

from taskcore.settings import env_var_names

# Terraform variable -> the setting of the same meaning in shared/taskcore/settings.py.
# Terraform configures these on the subscription; `taskctl bootstrap` does the same locally
# from the setting. Their defaults must agree, or local runs and the cloud differ.
SUBSCRIPTION_KNOBS = {
    "max_delivery_attempts": "MAX_DELIVERY_ATTEMPTS",
    "pubsub_max_delivery_attempts": "PUBSUB_MAX_DELIVERY_ATTEMPTS",
    "ack_deadline_seconds": "ACK_DEADLINE_SECONDS",
    "retry_min_backoff_seconds": "RETRY_MIN_BACKOFF_SECONDS",
    "retry_max_backoff_seconds": "RETRY_MAX_BACKOFF_SECONDS",
}

PUBSUB_AGENT = re.compile(
    r"^serviceAccount:service-\$\{data\.google_project\.\w+\.number\}@gcp-sa-pubsub\.iam\.gserviceaccount\.com$"
)


def api_container(tf: Terraform) -> dict:
    return runtime_container(tf, "api")


def worker_container(tf: Terraform) -> dict:
    return runtime_container(tf, "worker")


def dead_letter_source(tf: Terraform) -> tuple[str, dict]:
    """The (one) subscription with a dead_letter_policy: the worker's."""
    found = {
        n: b
        for n, b in tf.of_type("google_pubsub_subscription").items()
        if "dead_letter_policy" in b
    }
    assert len(found) == 1, (
        f"expected one subscription with a dead_letter_policy, found {sorted(found)}"
    )
    return next(iter(found.items()))


# --- formatting ------------------------------------------------------------------------------


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed; `terraform fmt -check -recursive infra/` not run")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"run `terraform fmt -recursive infra/`:\n{result.stdout}{result.stderr}"
    )


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_variable_defaults_pass_their_own_validations(tmp_path):
    """Terraform itself checks every default (and a tfvars null) against its validation."""
    (tmp_path / "variables.tf").write_text((INFRA / "variables.tf").read_text())
    run_terraform(tmp_path, "init", "-input=false")
    run_terraform(tmp_path, "plan", "-input=false", "-var", "project_id=my-project")
    (tmp_path / "terraform.tfvars").write_text("failed_attempts_alert_threshold = null\n")
    run_terraform(tmp_path, "plan", "-input=false", "-var", "project_id=my-project")


# --- references resolve (what `terraform validate` would catch first) -----------------------


def test_every_reference_is_declared(tf: Terraform):
    everything = [tf.resources, tf.data, tf.variables, tf.locals, tf.outputs, tf.checks]
    text = [s for part in everything for s in strings(part)]
    missing_resources = {f"{t}.{n}" for t, n in resource_refs(text)} - {
        f"{t}.{n}" for t, n in tf.resources
    }
    # data.google_project.this also matches the resource pattern; it is declared as data.
    missing_resources -= {f"{t}.{n}" for t, n in tf.data}
    assert not missing_resources, f"references to undeclared resources: {sorted(missing_resources)}"
    missing_vars = var_refs(text) - set(tf.variables)
    assert not missing_vars, f"undeclared variables: {sorted(missing_vars)}"
    missing_locals = local_refs(text) - set(tf.locals)
    assert not missing_locals, f"undeclared locals: {sorted(missing_locals)}"


def test_only_project_id_is_required(tf: Terraform):
    required = sorted(name for name, body in tf.variables.items() if "default" not in body)
    assert required == ["project_id"], "every variable but project_id needs a working default"


# --- dead letters ----------------------------------------------------------------------------


def test_dead_letter_policy_points_at_a_dlq_topic_that_has_a_subscription(tf: Terraform):
    source_name, source = dead_letter_source(tf)
    policy = block(source, "dead_letter_policy")
    dlq_topic = only_ref(policy["dead_letter_topic"], "google_pubsub_topic")
    assert (("google_pubsub_topic", dlq_topic)) in tf.resources
    assert only_ref(source["topic"], "google_pubsub_topic") != dlq_topic, (
        "dead-lettering into the subscription's own topic redelivers poison messages forever"
    )
    readers = [
        name
        for name, sub in tf.of_type("google_pubsub_subscription").items()
        if name != source_name and only_ref(sub["topic"], "google_pubsub_topic") == dlq_topic
    ]
    assert readers, "messages published to a topic without a subscription are lost"
    # The worker reads the limit from PUBSUB_MAX_DELIVERY_ATTEMPTS; Terraform sets both from one
    # variable (not the task's own MAX_DELIVERY_ATTEMPTS: lost deliveries count on Pub/Sub).
    assert var_refs(policy["max_delivery_attempts"]) == {"pubsub_max_delivery_attempts"}


def test_subscriptions_never_expire_and_keep_messages(tf: Terraform):
    source_name, source = dead_letter_source(tf)
    for name, sub in tf.of_type("google_pubsub_subscription").items():
        ttl = block(sub, "expiration_policy").get("ttl")
        assert ttl == "", f'{name}: an idle subscription expires after 31 days unless ttl = ""'
    assert source["message_retention_duration"] == "604800s", "the worker subscription keeps 7 days"
    # The worker applies the backoff itself (modifyAckDeadline); a retry policy on top would
    # delay crash redeliveries, and the worker reads the same variables from its env.
    assert "retry_policy" not in source, "the worker applies RETRY_*_BACKOFF_SECONDS itself"
    assert var_refs(source["ack_deadline_seconds"]) == {"ack_deadline_seconds"}
    dlq_subs = [n for n in tf.of_type("google_pubsub_subscription") if n != source_name]
    for name in dlq_subs:
        retention = tf.resources[("google_pubsub_subscription", name)]["message_retention_duration"]
        assert var_refs(retention) == {"dlq_retention_days"}, f"{name}: retention from a variable"
    assert tf.default("dlq_retention_days") >= 7, "a DLQ should keep dead letters at least a week"


def test_pubsub_service_agent_can_dead_letter(tf: Terraform):
    """Pub/Sub's own agent moves messages: publisher on the DLQ topic, subscriber on the source."""
    source_name, source = dead_letter_source(tf)
    dlq_topic = only_ref(
        block(source, "dead_letter_policy")["dead_letter_topic"], "google_pubsub_topic"
    )

    def is_agent(member: str) -> bool:
        if PUBSUB_AGENT.match(member):
            return True
        names = local_refs(member)
        return len(names) == 1 and bool(PUBSUB_AGENT.match(str(tf.locals.get(names.pop(), ""))))

    publishers = [
        name
        for name, grant in tf.of_type("google_pubsub_topic_iam_member").items()
        if grant["role"] == "roles/pubsub.publisher"
        and is_agent(member_of(grant))
        and only_ref(grant["topic"], "google_pubsub_topic") == dlq_topic
    ]
    assert publishers, "Pub/Sub's service agent needs roles/pubsub.publisher on the DLQ topic"
    subscribers = [
        name
        for name, grant in tf.of_type("google_pubsub_subscription_iam_member").items()
        if grant["role"] == "roles/pubsub.subscriber"
        and is_agent(member_of(grant))
        and only_ref(grant["subscription"], "google_pubsub_subscription") == source_name
    ]
    assert subscribers, (
        "Pub/Sub's service agent needs roles/pubsub.subscriber on the source subscription"
    )


# --- security ----------------------------------------------------------------------------------


def test_no_public_invoker_by_default(tf: Terraform):
    public = {"allUsers", "allAuthenticatedUsers"}
    for (rtype, name), body in tf.resources.items():
        members = set(strings(body.get("member"))) | set(strings(body.get("members")))
        if not members & public:
            continue
        assert rtype == "google_cloud_run_v2_service_iam_member", f"{rtype}.{name} is public"
        count = expression(body.get("count")) or ""
        match = re.fullmatch(r"var\.(\w+)\s*\?\s*1\s*:\s*0", count)
        assert match, f"{rtype}.{name} grants {members & public} unconditionally"
        variable = match.group(1)
        assert tf.default(variable) is False, f"var.{variable} must default to false"
        assert "WARNING" in tf.variables[variable].get("description", "")
        warned = [c for c in tf.checks.values() if variable in str(c)]
        assert warned, f"a check block should warn when var.{variable} is true"


def test_grants_are_resource_scoped_and_least_privilege(tf: Terraform):
    for rtype in ("google_project_iam_binding", "google_project_iam_policy"):
        assert not tf.of_type(rtype), f"{rtype}: grant on the resource instead"
    # On the project only what exists only there, through a custom role holding just that.
    for name, grant in tf.of_type("google_project_iam_member").items():
        roles = {
            n for t, n in resource_refs(grant["role"]) if t == "google_project_iam_custom_role"
        }
        assert len(roles) == 1, f"google_project_iam_member.{name}: grant on the resource instead"
        permissions = set(
            tf.resources[("google_project_iam_custom_role", roles.pop())]["permissions"]
        )
        assert permissions <= PROJECT_ONLY_PERMISSIONS, (
            f"google_project_iam_member.{name} grants {permissions - PROJECT_ONLY_PERMISSIONS} "
            "on the project: grant on the topic, subscription, bucket or job instead"
        )
    broad = {"roles/owner", "roles/editor", "roles/pubsub.admin", "roles/pubsub.editor",
             "roles/storage.admin", "roles/run.admin", "roles/iam.serviceAccountUser"}  # fmt: skip
    for (rtype, name), body in tf.resources.items():
        assert body.get("role") not in broad, f"{rtype}.{name} grants {body.get('role')}"


def test_bucket_is_private_with_lifecycle_rules(tf: Terraform):
    _, bucket = tf.one("google_storage_bucket")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert var_refs(bucket.get("force_destroy")) == {"bucket_force_destroy"}
    assert tf.default("bucket_force_destroy") is False
    prefixes = {
        prefix
        for rule in bucket.get("lifecycle_rule", [])
        if block(rule, "action")["type"] == "Delete"
        for prefix in block(rule, "condition").get("matches_prefix", [])
    }
    assert {"uploads/", "dlq-archive/", "idempotency/", "status/", "journal/", "stats/"} <= prefixes


@pytest.mark.parametrize(
    ("prefix", "variable"),
    [("journal/", "journal_retention_days"), ("stats/", "stats_retention_days")],
)
def test_the_dashboard_index_expires_by_its_own_retention_variable(tf: Terraform, prefix, variable):
    _, bucket = tf.one("google_storage_bucket")
    (rule,) = [
        r
        for r in bucket["lifecycle_rule"]
        if block(r, "condition").get("matches_prefix") == [prefix]
    ]
    assert var_refs(block(rule, "condition")["age"]) == {variable}
    assert block(rule, "action")["type"] == "Delete"
    assert 1 <= tf.default(variable) <= tf.default("status_retention_days")


def test_status_records_outlive_every_copy_of_their_message(tf: Terraform):
    """A redelivered or replayed task whose status record was deleted would run again."""
    _, bucket = tf.one("google_storage_bucket")
    (rule,) = [
        r
        for r in bucket["lifecycle_rule"]
        if block(r, "condition").get("matches_prefix") == ["status/"]
    ]
    assert var_refs(block(rule, "condition")["age"]) == {"status_retention_days"}
    _, source = dead_letter_source(tf)
    subscription_days = int(source["message_retention_duration"].rstrip("s")) / 86400
    dlq_days = tf.variables["dlq_retention_days"]["validation"][0]["condition"]
    assert "<= 31" in dlq_days, "the DLQ keeps dead letters at most 31 days"
    assert tf.default("status_retention_days") >= max(subscription_days, 31)
    condition = tf.variables["status_retention_days"]["validation"][0]["condition"]
    assert ">= 31" in condition, "the variable refuses retentions shorter than the DLQ's"


# --- the env contract between the code and Cloud Run -------------------------------------------


@pytest.mark.parametrize(
    ("scope", "container_of"), [("api", api_container), ("worker", worker_container)]
)
def test_cloud_run_sets_every_env_var_the_code_reads(tf: Terraform, scope, container_of):
    env = tf.container_env(container_of(tf))
    missing = required_cloud_env(scope) - set(env)
    assert not missing, (
        f"the {scope} reads {sorted(missing)} (taskcore.settings) but Cloud Run does not set "
        f"them: add them to the {scope}'s env in infra/run.tf"
    )
    reserved = PLATFORM_PROVIDED[scope] & set(env)
    assert not reserved, f"Cloud Run sets {sorted(reserved)} itself and rejects them in env"
    unknown = set(env) - set(env_var_names())
    assert not unknown, f"{sorted(unknown)} are set but no setting reads them (a typo?)"
    for name, (kind, _) in env.items():
        if name.endswith("_KEYS"):
            assert kind == "secret", f"{name} is a secret: use value_source.secret_key_ref"


def test_the_dispatchers_settings_are_set_on_the_api_and_the_queue_on_each_job(tf: Terraform):
    api = set(tf.container_env(api_container(tf)))
    worker = set(tf.container_env(worker_container(tf)))
    assert {"QUEUES", "RUN_REGION", "DISPATCH_COOLDOWN_SECONDS", "DISPATCH_ENABLED"} <= api
    assert {"QUEUE", "DISPATCH_ENABLED"} <= worker


def test_names_in_env_come_from_the_resources(tf: Terraform):
    env = tf.container_env(worker_container(tf))
    source_name, source = dead_letter_source(tf)
    dlq_topic = only_ref(
        block(source, "dead_letter_policy")["dead_letter_topic"], "google_pubsub_topic"
    )
    dlq_sub = next(n for n in tf.of_type("google_pubsub_subscription") if n != source_name)
    bucket, _ = tf.one("google_storage_bucket")
    wanted = {
        "TOPIC_NAME": ("google_pubsub_topic", only_ref(source["topic"], "google_pubsub_topic")),
        "SUBSCRIPTION_NAME": ("google_pubsub_subscription", source_name),
        "DLQ_TOPIC_NAME": ("google_pubsub_topic", dlq_topic),
        "DLQ_SUBSCRIPTION_NAME": ("google_pubsub_subscription", dlq_sub),
        "BUCKET_NAME": ("google_storage_bucket", bucket),
    }
    for name, ref in wanted.items():
        assert resource_refs(env[name][1]) == {ref}, f"{name} should be {ref[0]}.{ref[1]}.name"


def test_worker_and_subscription_share_pubsub_max_delivery_attempts(tf: Terraform):
    """PUBSUB_MAX_DELIVERY_ATTEMPTS on the worker comes from the variable the subscription uses,
    and the task's own MAX_DELIVERY_ATTEMPTS from another one, checked to stay below it."""
    _, source = dead_letter_source(tf)
    on_subscription = var_refs(block(source, "dead_letter_policy")["max_delivery_attempts"])
    kind, value = tf.container_env(worker_container(tf))["PUBSUB_MAX_DELIVERY_ATTEMPTS"]
    assert kind == "plain" and var_refs(value) == on_subscription
    for container in (api_container(tf), worker_container(tf)):
        kind, value = tf.container_env(container)["MAX_DELIVERY_ATTEMPTS"]
        assert kind == "plain" and var_refs(value) == {"max_delivery_attempts"}
    assert float(tf.default("max_delivery_attempts")) < float(
        tf.default("pubsub_max_delivery_attempts")
    )


@pytest.mark.parametrize(("variable", "setting"), sorted(SUBSCRIPTION_KNOBS.items()))
def test_subscription_defaults_match_the_code(tf: Terraform, variable, setting):
    assert float(tf.default(variable)) == float(setting_default(setting)), (
        f"var.{variable} and {setting} (taskcore.settings) must default alike"
    )


def test_worker_and_api_run_as_their_own_accounts(tf: Terraform):
    _, service = tf.one("google_cloud_run_v2_service")
    _, job = tf.one("google_cloud_run_v2_job")
    assert only_ref(block(service, "template")["service_account"], "google_service_account")
    assert only_ref(block(job, "template", "template")["service_account"], "google_service_account")


def test_each_queues_job_is_sized_by_the_queue(tf: Terraform):
    """Task count, timeout, retries and resources are the queue's fields (queues.tf), which
    default to the variables of the same meaning."""
    _, job = tf.one("google_cloud_run_v2_job")
    assert expression(job["for_each"]) == "local.queues"
    task = block(job, "template", "template")
    limits = block(task["containers"][0], "resources")["limits"]
    fields = {
        "task_count": block(job, "template")["task_count"],
        "job_task_timeout_seconds": task["timeout"],
        "job_max_retries": task["max_retries"],
        "cpu": limits["cpu"],
        "memory": limits["memory"],
    }
    falls_back_to = {
        "task_count": "job_task_count",
        "job_task_timeout_seconds": "job_task_timeout_seconds",
        "job_max_retries": "job_max_retries",
        "cpu": "worker_cpu",
        "memory": "worker_memory",
    }
    for field, value in fields.items():
        assert f"each.value.{field}" in value, f"{field} = {value}"
        assert var_refs(tf.locals["queue_defaults"][field]) == {falls_back_to[field]}
    # Overrides set the task count but not the parallelism: 0 runs every task of an
    # execution at once, so the dispatcher's task count is what runs.
    assert block(job, "template")["parallelism"] == 0


# --- observability -----------------------------------------------------------------------------


def test_alerts_cover_dlq_backlog_oldest_unacked_and_job_failures(tf: Terraform):
    filters = " ".join(
        block(condition, "condition_threshold")["filter"]
        for policy in tf.of_type("google_monitoring_alert_policy").values()
        for condition in policy["conditions"]
    )
    for metric in (
        "pubsub.googleapis.com/subscription/num_undelivered_messages",
        "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
        "run.googleapis.com/job/completed_execution_count",
    ):
        assert metric in filters, f"no alert on {metric}"


def test_outputs_give_the_url_and_next_commands(tf: Terraform):
    assert {"api_url", "names", "next_steps"} <= set(tf.outputs)
    assert resource_refs(tf.outputs["api_url"]["value"]) == {("google_cloud_run_v2_service", "api")}
