"""Each service account holds exactly the permissions its code path needs, per infra/iam.tf.

The emulators enforce no IAM: a call the roles do not cover passes every other test and
fails in production with PERMISSION_DENIED. Here every call of iam_contract.CALLS (plus the
scheduler's job run and Cloud Run's secret reads, read from the Terraform itself) is mapped
to its permission and checked against the roles granted on that very resource; a grant no
call needs is least privilege lost. tests/infra/test_permission_traffic.py holds CALLS to
the code's real traffic.
"""

from __future__ import annotations

import pytest
from iam_contract import (
    CALLS,
    EVERY_QUEUE_JOB,
    EVERY_QUEUE_SUBSCRIPTION,
    EVERY_QUEUE_TOPIC,
    METHOD_PERMISSIONS,
    PROJECT,
    Call,
)
from iam_roles import ROLE_PERMISSIONS
from infra_contract import (
    Terraform,
    block,
    covers,
    expression,
    grants_by_account,
    instance_addresses,
    resource_refs,
    runtime_account,
    runtime_container,
)

# Contract resources naming every queue's: the env var naming the default queue's, whose
# resource is then taken with all its instances.
EVERY_QUEUE = {EVERY_QUEUE_TOPIC: "TOPIC_NAME", EVERY_QUEUE_SUBSCRIPTION: "SUBSCRIPTION_NAME"}


def queue_jobs(tf: Terraform) -> str:
    """Address of every queue's job: the job resource, one instance per queue."""
    name, job = tf.one("google_cloud_run_v2_job")
    assert expression(job["for_each"]) == "local.queues", "one job per queue"
    return f"google_cloud_run_v2_job.{name}"


def resource_address(tf: Terraform, component: str, resource: str) -> str:
    """The Terraform address of a contract resource, from the component's container env."""
    if resource == PROJECT:
        return "project"
    if resource == EVERY_QUEUE_JOB:
        return queue_jobs(tf)
    env_var = EVERY_QUEUE.get(resource, resource)
    kind, value = tf.container_env(runtime_container(tf, component))[env_var]
    addresses = instance_addresses(tf, value)
    assert kind == "plain" and len(addresses) == 1, f"{env_var} does not name one resource: {value}"
    address = addresses.pop()
    if resource in EVERY_QUEUE:
        base = address.partition("[")[0]
        rtype, name = base.split(".")
        assert expression(tf.resources[(rtype, name)].get("for_each")) == "local.queues", (
            f"{base} is not one per queue"
        )
        return base
    return address


def secret_reads(tf: Terraform, component: str) -> set[Call]:
    """Cloud Run reads each secret env var as the runtime account: one call per secret map."""
    calls = set()
    for dyn in runtime_container(tf, component).get("dynamic", []):
        body = dyn.get("env")
        if body and "value_source" in block(body, "content"):
            calls.add(Call("secretmanager.versions.access", expression(body["for_each"])))
    return calls


def scheduler_calls(tf: Terraform) -> dict[str, set[Call]]:
    """Account -> what its Cloud Scheduler jobs call, from each job's http_target.

    An OAuth token calls a Google API: the Cloud Run Admin API's jobs.run on a job. An OIDC
    token calls a Cloud Run service's URL: a request to the API.
    """
    calls: dict[str, set[Call]] = {}
    for sched in tf.of_type("google_cloud_scheduler_job").values():
        if "http_target" not in sched:
            continue
        target = block(sched, "http_target")
        if "oauth_token" in target:
            assert target["uri"].endswith(":run"), target["uri"]
            (job,) = instance_addresses(tf, target["uri"], owner=sched)
            call = Call("google.cloud.run.v2.Jobs/RunJob", job)
            email = block(target, "oauth_token")["service_account_email"]
        else:
            (service,) = instance_addresses(tf, target["uri"])
            assert service.startswith("google_cloud_run_v2_service."), target["uri"]
            call = Call("run.routes.invoke", service)
            email = block(target, "oidc_token")["service_account_email"]
        (account,) = {n for t, n in resource_refs(email) if t == "google_service_account"}
        calls.setdefault(account, set()).add(call)
    return calls


def needs_by_account(tf: Terraform) -> dict[str, dict[str, set[str]]]:
    """Account -> resource address -> permissions its calls need there."""
    needs: dict[str, dict[str, set[str]]] = {}

    def need(account: str, call: Call, address: str) -> None:
        assert call.method in METHOD_PERMISSIONS, (
            f"{call.method} has no permission in iam_contract.METHOD_PERMISSIONS: add it from "
            "Google's reference"
        )
        needs.setdefault(account, {}).setdefault(address, set()).update(
            METHOD_PERMISSIONS[call.method]
        )

    for component, calls in CALLS.items():
        account = runtime_account(tf, component)
        for call in calls:
            need(account, call, resource_address(tf, component, call.resource))
        for call in secret_reads(tf, component):
            need(account, call, call.resource)
    for account, calls in scheduler_calls(tf).items():
        for call in calls:
            need(account, call, call.resource)
    return needs


def granted(tf: Terraform) -> dict[str, dict[str, set[str]]]:
    """Account -> resource address -> permissions its roles there include."""
    out: dict[str, dict[str, set[str]]] = {}
    for account, grants in grants_by_account(tf).items():
        for role, address in grants:
            out.setdefault(account, {}).setdefault(address, set()).update(
                role_permissions(tf, role)
            )
    return out


def granted_at(grants: dict[str, set[str]], address: str) -> set[str]:
    """What grants on this address, or on every instance of its resource, allow there."""
    return {p for on, permissions in grants.items() if covers(on, address) for p in permissions}


def role_permissions(tf: Terraform, role: str) -> frozenset[str]:
    """A predefined role's permissions (iam_roles), or a custom role's (its Terraform)."""
    custom = {n for t, n in resource_refs(role) if t == "google_project_iam_custom_role"}
    if custom:
        (name,) = custom
        return frozenset(tf.resources[("google_project_iam_custom_role", name)]["permissions"])
    assert role in ROLE_PERMISSIONS, (
        f"{role} is granted but iam_roles.ROLE_PERMISSIONS does not list its "
        "permissions: add them from Google's reference"
    )
    return ROLE_PERMISSIONS[role]


def missing_permissions(needs, grants) -> list[str]:
    """Every (account, resource, permission) needed but not granted, readably."""
    return [
        f"{account}: {permission} on {address}"
        for account, by_resource in sorted(needs.items())
        for address, permissions in sorted(by_resource.items())
        for permission in sorted(permissions - granted_at(grants.get(account, {}), address))
    ]


def test_the_api_worker_and_scheduler_run_as_three_accounts(tf: Terraform):
    accounts = {runtime_account(tf, "api"), runtime_account(tf, "worker"), *scheduler_calls(tf)}
    assert len(accounts) == 3, accounts


@pytest.mark.parametrize("component", ["api", "worker", "scheduler"])
def test_every_call_is_covered_by_a_role_granted_on_its_resource(tf: Terraform, component):
    needs = needs_by_account(tf)
    if component == "scheduler":
        accounts = set(scheduler_calls(tf))
    else:
        accounts = {runtime_account(tf, component)}
    missing = missing_permissions({a: needs[a] for a in accounts}, granted(tf))
    assert not missing, "infra/iam.tf does not grant:\n  " + "\n  ".join(missing)


def needed_at(needs: dict[str, set[str]], address: str) -> set[str]:
    """What calls need on this address, or on every instance of its resource (the address is
    one of them); a grant on every instance is not used by a call on some of them."""
    return {p for on, permissions in needs.items() if covers(on, address) for p in permissions}


def test_no_account_holds_a_role_none_of_its_calls_needs(tf: Terraform):
    needs = needs_by_account(tf)
    unused = [
        f"{account}: {role} on {address}"
        for account, grants in sorted(grants_by_account(tf).items())
        for role, address in sorted(grants)
        if not role_permissions(tf, role) & needed_at(needs.get(account, {}), address)
    ]
    assert not unused, "grants no call needs (least privilege):\n  " + "\n  ".join(unused)


def test_missing_permissions_names_the_gap():
    needs = {"worker": {"google_pubsub_topic.tasks": {"pubsub.topics.publish"}}}
    grants = {
        "worker": {"google_pubsub_topic.dlq": set(ROLE_PERMISSIONS["roles/pubsub.publisher"])}
    }
    assert missing_permissions(needs, grants) == [
        "worker: pubsub.topics.publish on google_pubsub_topic.tasks"
    ]


def test_subscriber_role_cannot_read_its_subscription():
    """Why the worker must not call GetSubscription: the subscriber role lacks the get."""
    assert "pubsub.subscriptions.get" not in ROLE_PERMISSIONS["roles/pubsub.subscriber"]
    assert "pubsub.topics.get" not in ROLE_PERMISSIONS["roles/pubsub.publisher"]
