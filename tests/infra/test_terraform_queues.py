"""Queues in Terraform: one topic, subscription, job and schedule per queue, as the code names them.

The code routes a task type to `<TOPIC_NAME>-<queue>` (TOPIC_NAME itself for "default") and a
worker with QUEUE=q drains `<SUBSCRIPTION_NAME>-q`; the API's dispatcher starts executions
of the jobs QUEUES names, sized by its fields. These tests run infra/queues.tf through
Terraform (terraform_eval) with the example tfvars and with broken ones, and read the
resources that are built from it.
"""

from __future__ import annotations

import json
import re

import pytest
from infra_contract import (
    INFRA,
    Terraform,
    block,
    expression,
    local_refs,
    resource_refs,
    runtime_container,
)
from log_queries import Comparison, parse_query
from terraform_eval import evaluate

from taskcore.payloads import TaskPayload
from taskcore.tasks import TASK_NAME_PATTERN, TaskType, check_task_type

EXAMPLE = (INFRA / "terraform.tfvars.example").read_text()

# What a deployment that predates queues holds in its state: the default queue's resources
# must keep these objects (moved blocks), or an upgrade would replace the subscription (and
# drop every queued task) and the job.
PRE_QUEUE_RESOURCES = (
    "google_pubsub_topic.tasks",
    "google_pubsub_subscription.worker",
    "google_cloud_run_v2_job.worker",
    "google_cloud_scheduler_job.run_worker",
    "google_pubsub_topic_iam_member.api_publisher",
    "google_pubsub_topic_iam_member.api_topic_viewer",
    "google_pubsub_topic_iam_member.worker_tasks_publisher",
    "google_pubsub_subscription_iam_member.worker_subscriber",
    "google_pubsub_subscription_iam_member.worker_subscriber_pubsub_agent",
    "google_pubsub_subscription_iam_member.api_viewer",
    "google_cloud_run_v2_job_iam_member.scheduler_runs_worker",
    "google_monitoring_alert_policy.oldest_unacked",
    "google_monitoring_alert_policy.job_failures",
)

# Resources there is one of per queue (for_each = local.queues), and per queue with a
# safety-net schedule.
PER_QUEUE = {
    "google_pubsub_topic.tasks",
    "google_pubsub_subscription.worker",
    "google_cloud_run_v2_job.worker",
    "google_pubsub_topic_iam_member.api_publisher",
    "google_pubsub_topic_iam_member.worker_tasks_publisher",
    "google_pubsub_subscription_iam_member.worker_subscriber",
    "google_pubsub_subscription_iam_member.worker_subscriber_pubsub_agent",
    "google_cloud_run_v2_job_iam_member.api_runs_queue_jobs",
    "google_cloud_run_v2_job_iam_member.api_views_queue_jobs",
    "google_monitoring_alert_policy.oldest_unacked",
    "google_monitoring_alert_policy.job_failures",
}
PER_SCHEDULED_QUEUE = {
    "google_cloud_scheduler_job.run_worker",
    "google_cloud_run_v2_job_iam_member.scheduler_runs_worker",
}


def resource(tf: Terraform, address: str) -> dict:
    rtype, name = address.split(".")
    return tf.resources[(rtype, name)]


def problems(tfvars: str) -> list[str]:
    return evaluate(tfvars)["queue_problems"]


# --- names ---------------------------------------------------------------------------------


def test_queue_resources_are_named_as_the_code_derives_them():
    queues = evaluate(EXAMPLE)["queues"]
    assert set(queues) == {"default", "urgent", "batch"}
    # The default queue keeps the names of deployments that predate queues.
    assert queues["default"]["topic_name"] == "background-tasks"
    assert queues["default"]["subscription_name"] == "background-tasks-worker"
    assert queues["default"]["job_name"] == "background-worker"
    for name in ("urgent", "batch"):
        assert queues[name]["topic_name"] == f"background-tasks-{name}"
        assert queues[name]["subscription_name"] == f"background-tasks-worker-{name}"
        assert queues[name]["job_name"] == f"background-worker-{name}"


@pytest.mark.parametrize(
    ("address", "argument", "field"),
    [
        ("google_pubsub_topic.tasks", "name", "topic_name"),
        ("google_pubsub_subscription.worker", "name", "subscription_name"),
        ("google_cloud_run_v2_job.worker", "name", "job_name"),
    ],
)
def test_each_queues_resources_take_the_resolved_names(tf: Terraform, address, argument, field):
    assert expression(resource(tf, address)[argument]) == f"each.value.{field}"


def test_queue_names_follow_the_code_rule():
    """infra/variables.tf refuses exactly the queue names @task(queue=...) refuses."""
    validations = " ".join(str(v["condition"]) for v in queue_variable()["validation"])
    (pattern,) = re.findall(r'regex\("([^"]+)", name\)', validations)

    def code_accepts(queue: str) -> bool:
        probe = TaskType(name="probe", handler=lambda ctx, p: None, payload_model=TaskPayload)
        try:
            check_task_type(TaskType(**{**probe.__dict__, "queue": queue}))
        except TypeError:
            return False
        return True

    for name in ["urgent", "a", "x-1", "batch-", "Urgent", "1a", "a_b", "a" * 31, "a" * 32, ""]:
        assert bool(re.fullmatch(pattern, name)) == code_accepts(name), name


def test_periodic_task_types_follow_the_code_rule():
    (validation, *_) = periodic_variable()["validation"]
    assert f'regex("{TASK_NAME_PATTERN}"' in validation["condition"]


def queue_variable() -> dict:
    return Terraform.load(INFRA).variables["queues"]


def periodic_variable() -> dict:
    return Terraform.load(INFRA).variables["periodic_tasks"]


# --- fields and their defaults -------------------------------------------------------------


def test_a_queue_takes_the_variables_for_what_it_leaves_out(tf: Terraform):
    queues = evaluate(EXAMPLE)["queues"]
    default, urgent, batch = queues["default"], queues["urgent"], queues["batch"]
    assert default["max_tasks"] == tf.default("job_parallelism")
    assert default["worker_concurrency"] == tf.default("worker_concurrency")
    assert default["cpu"] == tf.default("worker_cpu")
    assert default["memory"] == tf.default("worker_memory")
    assert default["task_count"] == tf.default("job_task_count")
    assert default["schedule"] == tf.default("worker_schedule")
    assert default["job_max_retries"] == tf.default("job_max_retries")
    assert urgent["job_task_timeout_seconds"] == tf.default("job_task_timeout_seconds")
    # What a queue sets is its own.
    assert (urgent["cpu"], urgent["memory"], urgent["max_tasks"]) == ("1", "1Gi", 50)
    assert (batch["cpu"], batch["memory"], batch["job_max_retries"]) == ("4", "8Gi", 0)
    assert batch["schedule"] == "0 * * * *"


def test_concurrency_and_backlog_per_task_derive_from_the_queue():
    queues = evaluate(EXAMPLE)["queues"]
    default, urgent, batch = queues["default"], queues["urgent"], queues["batch"]
    # Left out: no cap below what max_tasks containers run, and a container per
    # worker_concurrency waiting tasks.
    assert default["max_concurrency"] == default["max_tasks"] * default["worker_concurrency"]
    assert default["backlog_per_task"] == default["worker_concurrency"]
    assert urgent["max_concurrency"] == 50 * 16
    assert (batch["max_concurrency"], batch["backlog_per_task"]) == (20, 500)


def test_the_example_sets_urgent_and_batch_apart_and_passes_every_check():
    queues = evaluate(EXAMPLE)["queues"]
    urgent, batch = queues["urgent"], queues["batch"]
    assert urgent["max_tasks"] > batch["max_tasks"]
    assert urgent["backlog_per_task"] < batch["backlog_per_task"]
    assert urgent["oldest_unacked_alert_seconds"] < batch["oldest_unacked_alert_seconds"]
    assert problems(EXAMPLE) == []


# --- QUEUES, the dispatcher's table --------------------------------------------------------


def test_queues_setting_is_the_dispatchers_table_of_every_queue(tf: Terraform):
    kind, value = tf.container_env(runtime_container(tf, "api"))["QUEUES"]
    assert kind == "plain" and expression(value) == "jsonencode(local.dispatch_queues)"
    table = evaluate(EXAMPLE)["dispatch_queues"]
    assert json.loads(json.dumps(table)) == table  # what jsonencode renders
    assert table["urgent"] == {
        "job": "background-worker-urgent",
        "max_tasks": 50,
        "backlog_per_task": 16,
        "max_concurrency": 800,
        "worker_concurrency": 16,
    }
    assert table["batch"] == {
        "job": "background-worker-batch",
        "max_tasks": 5,
        "backlog_per_task": 500,
        "max_concurrency": 20,
        "worker_concurrency": 8,
    }
    assert table["default"]["job"] == "background-worker"


def test_the_api_knows_where_the_jobs_run(tf: Terraform):
    _, job = tf.one("google_cloud_run_v2_job")
    env = tf.container_env(runtime_container(tf, "api"))
    assert env["RUN_REGION"] == ("plain", "${var.region}")
    assert job["location"] == "${var.region}"


def test_the_api_and_the_jobs_deploy_apart(tf: Terraform):
    """Adding a task type applies the jobs first, removing one the service first, each with
    -target (docs/deploy.md, step 10): Terraform applies a target's dependencies with it,
    so neither may depend on the other."""
    _, service = tf.one("google_cloud_run_v2_service")
    _, job = tf.one("google_cloud_run_v2_job")

    def references(body: dict) -> set[tuple[str, str]]:
        """The resources a body names, itself or through the locals it uses."""
        return resource_refs(body) | resource_refs([tf.locals[n] for n in local_refs(body)])

    assert ("google_cloud_run_v2_job", "worker") not in references(service)
    assert ("google_cloud_run_v2_service", "api") not in references(job)


def test_each_worker_drains_its_own_queue(tf: Terraform):
    env = tf.container_env(runtime_container(tf, "worker"))
    assert env["QUEUE"] == ("plain", "${each.key}")
    assert env["WORKER_CONCURRENCY"] == ("plain", "${tostring(each.value.worker_concurrency)}")
    # TOPIC_NAME and SUBSCRIPTION_NAME stay the default queue's: the code derives the others.
    assert env["TOPIC_NAME"] == ("plain", '${google_pubsub_topic.tasks["default"].name}')
    assert env["SUBSCRIPTION_NAME"] == (
        "plain",
        '${google_pubsub_subscription.worker["default"].name}',
    )


# --- one of each per queue -----------------------------------------------------------------


@pytest.mark.parametrize("address", sorted(PER_QUEUE))
def test_every_queue_has_its_own(tf: Terraform, address):
    assert expression(resource(tf, address).get("for_each")) == "local.queues"


@pytest.mark.parametrize("address", sorted(PER_SCHEDULED_QUEUE))
def test_every_queue_with_a_schedule_has_its_own(tf: Terraform, address):
    assert expression(resource(tf, address).get("for_each")) == "local.scheduled_queues"


def test_a_queue_without_schedule_gets_no_safety_net_run():
    tfvars = 'queues = { default = {}, batch = { schedule = "" } }'
    assert set(evaluate(tfvars)["scheduled_queues"]) == {"default"}


def test_the_dead_letter_topic_and_its_subscription_are_shared(tf: Terraform):
    for name in ("dlq",):
        assert "for_each" not in tf.resources[("google_pubsub_topic", name)]
        assert "for_each" not in tf.resources[("google_pubsub_subscription", name)]
    policy = block(tf.resources[("google_pubsub_subscription", "worker")], "dead_letter_policy")
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dlq.id}"


def test_an_upgrade_keeps_the_default_queues_resources():
    tf = Terraform.load(INFRA)
    moved = dict(tf.moved)
    for address in PRE_QUEUE_RESOURCES:
        rtype, name = address.split(".")
        assert (rtype, name) in tf.resources, f"{address} is gone: a moved block must say where"
        if address not in PER_QUEUE | PER_SCHEDULED_QUEUE:
            continue
        assert moved.get(address) == f'{address}["default"]', (
            f"{address} is per queue now: `moved {{ from = {address} to = "
            f'{address}["default"] }}` keeps the object'
        )
    for source, target in tf.moved:
        assert source in PRE_QUEUE_RESOURCES and target == f'{source}["default"]', (source, target)


# --- what Terraform refuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tfvars", "message"),
    [
        ("queues = { urgent = {} }", 'queues must contain "default"'),
        ("queues = { default = {}, Urgent = {} }", "A queue name is a lower-case letter"),
        ("queues = { default = {}, urgent = { max_tasks = 0 } }", "whole numbers of at least 1"),
        ("queues = { default = { job_max_retries = 11 } }", "0 to 10 times"),
        (
            'periodic_tasks = [{ task_type = "a", schedule = "* * * * *" },'
            ' { task_type = "a", schedule = "0 * * * *" }]',
            "appears twice",
        ),
        ('periodic_tasks = [{ task_type = "Nightly", schedule = "0 3 * * *" }]', "task type name"),
    ],
)
def test_terraform_refuses_queues_the_code_cannot_use(tfvars, message):
    errors = re.sub(r"\s+", " ", evaluate(tfvars).errors)
    assert message in errors, errors


@pytest.mark.parametrize(
    ("tfvars", "message"),
    [
        (
            "queues = { default = {}, dlq = {} }",
            "dlq: its topic background-tasks-dlq is the dead-letter topic",
        ),
        (
            "queues = { default = {}, late- = {} }",
            "late-: the job name background-worker-late- is no Cloud Run job name",
        ),
        (
            "queues = { default = { max_concurrency = 10 } }",
            "default: max_concurrency (10) is below worker_concurrency (64)",
        ),
        (
            "queues = { default = { task_count = 11 } }",
            "default: task_count (11) is above max_tasks (10)",
        ),
    ],
)
def test_queues_that_would_break_a_resource_are_reported(tfvars, message):
    reported = problems(tfvars)
    assert [p for p in reported if p.startswith(message)], reported


@pytest.mark.parametrize("address", ["google_pubsub_topic.tasks", "google_cloud_run_v2_job.worker"])
def test_the_reported_problems_stop_the_plan(tf: Terraform, address):
    (lifecycle,) = resource(tf, address)["lifecycle"]
    conditions = [p["condition"] for p in lifecycle["precondition"]]
    assert "${length(local.queue_problems) == 0}" in conditions


def test_a_periodic_task_on_an_undeclared_queue_is_reported(tf: Terraform):
    tfvars = 'periodic_tasks = [{ task_type = "nightly", schedule = "0 3 * * *", queue = "batch" }]'
    assert evaluate(tfvars)["periodic_task_problems"] == [
        "nightly is routed to queue batch, which var.queues does not declare"
    ]
    (lifecycle,) = tf.resources[("google_cloud_scheduler_job", "periodic_task")]["lifecycle"]
    assert "${length(local.periodic_task_problems) == 0}" in [
        p["condition"] for p in lifecycle["precondition"]
    ]


def test_periodic_tasks_default_to_the_default_queue_and_the_schedules_time_zone(tf: Terraform):
    tfvars = (
        'periodic_tasks = [{ task_type = "nightly", schedule = "0 3 * * *" },'
        ' { task_type = "report", schedule = "0 9 * * 1", timezone = "Europe/Paris" }]'
    )
    periodic = evaluate(tfvars)["periodic_tasks"]
    assert periodic["nightly"]["queue"] == "default"
    assert periodic["nightly"]["timezone"] == tf.default("schedule_time_zone")
    assert periodic["report"]["timezone"] == "Europe/Paris"


# --- logs ----------------------------------------------------------------------------------


def test_the_log_metrics_count_every_queues_worker():
    query = parse_query(evaluate(EXAMPLE)["worker_logs"])
    jobs = ("background-worker-batch", "background-worker", "background-worker-urgent")
    assert Comparison("resource.labels.job_name", "=", jobs) in query.operands

    def line(job: str) -> dict:
        return {"resource": {"type": "cloud_run_job", "labels": {"job_name": job}}}

    assert all(query.matches(line(job)) for job in jobs)
    assert not query.matches(line("someone-elses-job"))


def test_a_targeted_apply_of_the_jobs_brings_every_queue_up_whole(tf: Terraform):
    """docs/deploy.md adds a queue with -target=google_cloud_run_v2_job.worker: Terraform
    applies a target's dependencies with it, so the jobs depend on every queue's topic and
    subscription and on the worker account's grants there."""
    _, job = tf.one("google_cloud_run_v2_job")
    env = tf.container_env(runtime_container(tf, "worker"))
    env_refs = resource_refs([value for _, value in env.values()])
    assert {("google_pubsub_topic", "tasks"), ("google_pubsub_subscription", "worker")} <= env_refs
    grants = resource_refs(job["depends_on"])
    for grant in ("worker_subscriber", "worker_subscriber_pubsub_agent"):
        assert ("google_pubsub_subscription_iam_member", grant) in grants
    for grant in ("worker_tasks_publisher", "worker_dlq_publisher"):
        assert ("google_pubsub_topic_iam_member", grant) in grants


def test_taskctl_schedules_export_is_what_terraform_takes_for_periodic_tasks(tf: Terraform):
    """The periodic types declared in code become Cloud Scheduler jobs, with nothing retyped."""
    from click.testing import CliRunner

    from taskctl.main import main as cli_main

    result = CliRunner().invoke(
        cli_main,
        ["schedules", "export"],
        env={"TASK_MODULES": "example_tasks,tests.task_modules.nightly"},
    )
    assert result.exit_code == 0, result.output
    exported = json.loads(result.output)
    assert exported == {
        "periodic_tasks": [
            {
                "task_type": "nightly_report",
                "schedule": "0 3 * * *",
                "timezone": "Europe/Paris",
                "queue": "default",
            }
        ]
    }
    # HCL takes JSON values: the same text Terraform reads from a .auto.tfvars.json.
    evaluated = evaluate(f"periodic_tasks = {json.dumps(exported['periodic_tasks'])}")
    assert evaluated["periodic_task_problems"] == []
    assert list(evaluated["periodic_tasks"]) == ["nightly_report"]
