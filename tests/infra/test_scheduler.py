"""Cloud Scheduler's jobs: what each calls, with which token, as which account.

Two kinds of call: the Cloud Run Admin API's jobs.run on a queue's job (the safety-net run,
a Google API, so an OAuth access token), and the API's own /internal/ routes (the
dispatcher's tick and the periodic task types' firings, a Cloud Run service, so an OIDC
identity token for its URL). tests/infra/test_permissions.py checks the grants they need.
"""

from __future__ import annotations

import re

from infra_contract import (
    Terraform,
    block,
    expression,
    instance_addresses,
    member_of,
    only_ref,
    resource_refs,
    var_refs,
)


def http_jobs(tf: Terraform, token: str) -> dict[str, dict]:
    """Cloud Scheduler jobs with an http_target authenticated by `token` (oauth or oidc)."""
    return {
        name: sched
        for name, sched in tf.of_type("google_cloud_scheduler_job").items()
        if "http_target" in sched and f"{token}_token" in block(sched, "http_target")
    }


def caller(target: dict, token: str) -> str:
    return only_ref(
        block(target, f"{token}_token")["service_account_email"], "google_service_account"
    )


def test_scheduler_runs_each_scheduled_queues_job_with_an_oauth_token(tf: Terraform):
    """The safety net: jobs.run on the queue's job, a Google API, so an OAuth token."""
    ((name, sched),) = http_jobs(tf, "oauth").items()
    target = block(sched, "http_target")
    assert expression(sched["for_each"]) == "local.scheduled_queues"
    assert re.fullmatch(
        r"https://run\.googleapis\.com/v2/projects/.+/locations/.+/jobs/.+:run", target["uri"]
    ), target["uri"]
    # [each.key] of the scheduled queues: every one of them, and only those.
    assert instance_addresses(tf, target["uri"], owner=sched) == {
        "google_cloud_run_v2_job.worker[local.scheduled_queues]"
    }
    assert target["http_method"] == "POST"
    assert expression(sched["schedule"]) == "each.value.schedule"
    grants = [
        grant
        for grant in tf.of_type("google_cloud_run_v2_job_iam_member").values()
        if instance_addresses(tf, grant["name"], owner=grant)
        == {"google_cloud_run_v2_job.worker[local.scheduled_queues]"}
        and grant["role"] in ("roles/run.invoker", "roles/run.jobsExecutor")
        and only_ref(member_of(grant), "google_service_account") == caller(target, "oauth")
    ]
    assert grants, "the scheduler's account needs run.invoker on the jobs it runs"


def test_the_tick_and_periodic_tasks_call_the_api_with_an_identity_token(tf: Terraform):
    """Requests to the API's own URL: an OIDC token whose audience is the service's URL."""
    calls = http_jobs(tf, "oidc")
    assert set(calls) == {"dispatch_tick", "periodic_task"}, sorted(calls)
    paths = {}
    for name, sched in calls.items():
        target = block(sched, "http_target")
        assert target["http_method"] == "POST"
        base, _, path = target["uri"].partition("}")
        assert base == "${google_cloud_run_v2_service.api.uri", target["uri"]
        paths[name] = path
        # Cloud Run accepts a token for its own URL; the scheduler's default audience would
        # be the whole URI, path included.
        token = block(target, "oidc_token")
        assert token["audience"] == "${google_cloud_run_v2_service.api.uri}"
        grants = [
            grant
            for grant in tf.of_type("google_cloud_run_v2_service_iam_member").values()
            if grant["role"] == "roles/run.invoker"
            and "member" in grant
            and resource_refs(member_of(grant))
            == {("google_service_account", caller(target, "oidc"))}
        ]
        assert grants, f"{name}: its account needs run.invoker on the API"
    assert paths == {
        "dispatch_tick": "/internal/tick",
        "periodic_task": "/internal/fire/${each.key}",
    }
    assert var_refs(calls["dispatch_tick"]["schedule"]) == {"dispatch_tick_schedule"}
    periodic = calls["periodic_task"]
    assert expression(periodic["for_each"]) == "local.periodic_tasks"
    assert expression(periodic["schedule"]) == "each.value.schedule"
    assert expression(periodic["time_zone"]) == "each.value.timezone"
    # A retried firing carries the same schedule time, so the API runs it once: retry freely.
    assert block(periodic, "retry_config")["retry_count"] >= 1
