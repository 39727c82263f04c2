"""The deploy guide and Terraform's next_steps run as printed.

docs/deploy.md and `terraform output next_steps` are pasted into shells by people deploying
for the first time. These tests hold them to the code: the secrets exist before the apply
that wires them, every replay says what to replay, every scheduled task body is one the API
and the worker accept, Terraform's defaults are the settings' defaults, and every API call
they print answers 2xx from the real API with the keys it needs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
import pytest
import requests
from doc_commands import (
    DEPLOY_GUIDE,
    Command,
    code_blocks,
    curl_request,
    guide_commands,
    shell_commands,
    taskctl_args,
)
from infra_contract import (
    INFRA,
    Terraform,
    expression,
    resource_refs,
    run_terraform,
    runtime_container,
    setting_default,
    var_refs,
)

from taskcore.dlq.letters import DeadLetterFilter
from taskcore.envelope import parse_message
from taskctl.main import main as taskctl

API_BASES = ("$API_URL", "${google_cloud_run_v2_service.api.uri}")


def next_steps_commands(tf: Terraform) -> list[Command]:
    """next_steps as written, each ${...} standing for a name (the commands' shape is what counts)."""
    text = tf.outputs["next_steps"]["value"]
    text = re.sub(r"^<<-EOT\n|\n?\s*EOT$", "", text)
    for expr in set(re.findall(r"\$\{[^}]*\}", text)):
        if expr not in API_BASES:
            text = text.replace(expr, "NAME")
    return shell_commands(text, "infra/outputs.tf next_steps")


def rendered_next_steps(tmp_path: Path, api_secret_env: str | None = None) -> str:
    """next_steps as Terraform renders it, from a copy of its locals and output.

    Resources cannot be created without providers, so their attributes become fixed names;
    the locals and the template are Terraform's own, evaluated by Terraform.
    """
    outputs = (INFRA / "outputs.tf").read_text()
    body = outputs[outputs.index("locals {") :]
    body = re.sub(
        r'\bgoogle_[a-z0-9_]+\.[A-Za-z0-9_]+(?:\["[^"]*"\])?\.(uri|name)\b', r'"STUB-\1"', body
    )
    (tmp_path / "variables.tf").write_text((INFRA / "variables.tf").read_text())
    (tmp_path / "next_steps.tf").write_text(body)
    args = ["-var", "project_id=my-project"]
    if api_secret_env is not None:
        args += ["-var", f"api_secret_env={api_secret_env}"]
    run_terraform(tmp_path, "init", "-input=false")
    run_terraform(tmp_path, "apply", "-auto-approve", "-input=false", *args)
    return run_terraform(tmp_path, "output", "-raw", "next_steps")


def scheduled_task_examples() -> list[tuple[str, str]]:
    """(where, task_json) of every scheduled-task example in the docs and Terraform."""
    found = []
    sources = [DEPLOY_GUIDE, INFRA / "variables.tf", INFRA / "terraform.tfvars.example"]
    for path in sources:
        for match in re.finditer(r'task_json\s*=\s*("(?:[^"\\]|\\.)*")', path.read_text()):
            found.append((path.name, json.loads(match.group(1))))  # HCL escapes as JSON does
    return found


def selection(args: list[str]) -> tuple[DeadLetterFilter, str | None]:
    """What `taskctl dlq replay|purge ARGS` selects (filter, --since), by taskctl's own options."""
    group = taskctl.get_command(click.Context(taskctl), args[0])
    command = group.get_command(click.Context(group), args[1])
    params = command.make_context(args[1], args[2:]).params  # raises on a bad option
    return DeadLetterFilter(
        task_ids=frozenset(params["task_ids"]),
        task_type=params["task_type"],
        error=params["error"],
        everything=params["everything"],
    ), params["since"]


def dlq_changes(commands: list[Command]) -> list[tuple[Command, list[str]]]:
    return [
        (c, args)
        for c in commands
        if (args := taskctl_args(c))
        and args[:1] == ["dlq"]
        and args[1:2] in (["replay"], ["purge"])
    ]


# --- order and names -----------------------------------------------------------------------


def test_secrets_exist_before_the_apply_that_wires_them(tf: Terraform):
    commands = guide_commands()

    def first(predicate, what: str) -> int:
        for index, command in enumerate(commands):
            if predicate(command.argv):
                return index
        raise AssertionError(f"docs/deploy.md never runs {what}")

    enable_apis = first(
        lambda a: a[:2] == ("terraform", "apply") and "-target=google_project_service.enabled" in a,
        "the apply that enables the APIs",
    )
    full_apply = first(
        lambda a: a[:2] == ("terraform", "apply") and not any(x.startswith("-target") for x in a),
        "a full terraform apply",
    )
    for secret in tf.default("api_secret_env").values():
        created = first(
            lambda a, s=secret: a[:4] == ("gcloud", "secrets", "create", s),
            f"gcloud secrets create {secret}",
        )
        assert enable_apis < created < full_apply, (
            f"secret {secret} must be created after Secret Manager is enabled and before the "
            "apply whose Cloud Run service reads it"
        )


def test_every_apply_target_names_a_resource(tf: Terraform):
    targets = [
        arg.removeprefix("-target=")
        for c in guide_commands()
        for arg in c.argv
        if arg.startswith("-target=")
    ]
    assert targets, "the guide's first apply targets the APIs and the repository"
    for target in targets:
        rtype, _, name = target.partition(".")
        assert (rtype, name) in tf.resources, f"-target={target} names no resource in infra/"


# --- taskctl -------------------------------------------------------------------------------


def test_documented_replays_and_purges_say_what_to_act_on(tf: Terraform):
    changes = dlq_changes(guide_commands()) + dlq_changes(next_steps_commands(tf))
    assert len(changes) >= 3, "the guide and next_steps show how to replay"
    for command, args in changes:
        chosen, since = selection(args)
        assert not chosen.is_empty or since, f"{command}: replay/purge without a selection exits 2"


def test_a_replay_without_selection_is_caught():
    chosen, since = selection(["dlq", "replay", "--dry-run"])
    assert chosen.is_empty and not since


def test_alert_documentation_replays_with_a_selection():
    text = (INFRA / "monitoring.tf").read_text()
    for match in re.finditer(r"`(taskctl dlq (?:replay|purge)[^`]*)`", text):
        chosen, since = selection(match.group(1).split()[1:])
        assert not chosen.is_empty or since, match.group(1)


# --- scheduled tasks -----------------------------------------------------------------------


def test_scheduled_task_examples_are_tasks_the_worker_parses(builtin_registry):
    examples = scheduled_task_examples()
    assert len(examples) >= 3, "variables.tf, terraform.tfvars.example and deploy.md each show one"
    for where, task_json in examples:
        body = json.loads(task_json)
        attributes = {"task_type": body["task_type"], "source": "cloud-scheduler"}
        envelope, _ = parse_message(
            builtin_registry, task_json.encode(), attributes, message_id="42"
        )
        # Each cron run is its own task, keyed by its message id.
        assert envelope.task_id == "msg-42", where
        assert "payload" not in body, f"{where}: POST /submit-task refuses a payload wrapper"


# --- defaults ------------------------------------------------------------------------------


def terraform_default(tf: Terraform, value: object) -> object:
    """The Terraform default behind one env value, or None where it is derived.

    A value is `var.X` (maybe through tostring or join), a resource's name that is `var.X`,
    or a field of the queue whose job it is: `each.key` (its name) or `each.value.F`, taken
    for the default queue as Terraform resolves it (infra/queues.tf).
    """
    variables = var_refs(value)
    if not variables and len(refs := resource_refs(value)) == 1:
        value = tf.resources[refs.pop()].get("name")
        variables = var_refs(value)
    if len(variables) == 1:
        return tf.default(variables.pop())
    field = re.fullmatch(r"(?:tostring\()?each\.(key|value\.\w+)\)?", expression(value) or "")
    if field and field.group(1) == "key":
        return "default"
    if field:
        return tf.local_value("queues")["default"][field.group(1).removeprefix("value.")]
    return None


def wired_defaults(tf: Terraform) -> dict[str, object]:
    """Env var -> the Terraform default Cloud Run passes for it (None: derived, see above)."""
    wired = {}
    for component in ("api", "worker"):
        for name, (kind, value) in tf.container_env(runtime_container(tf, component)).items():
            if kind == "plain":
                wired[name] = terraform_default(tf, value)
    return wired


def same(terraform_default, setting_default_value) -> bool:
    if isinstance(setting_default_value, bool):
        return terraform_default is setting_default_value
    if isinstance(setting_default_value, int | float):
        return float(terraform_default) == float(setting_default_value)
    if isinstance(setting_default_value, tuple):
        return tuple(terraform_default) == setting_default_value
    return terraform_default == setting_default_value


# Defaults that differ on purpose, each with why: everything else must be equal.
DIFFERENT_ON_PURPOSE = {
    # Locally nothing stands between a client and the API; on Cloud Run its front end does,
    # and appends the client's address to X-Forwarded-For.
    "TRUSTED_PROXY_HOPS": (1, 0),
    # Locally (and in tests) nothing answers the Cloud Run Admin API unless the dev stack's
    # stand-in runs; on GCP the API starts executions on demand.
    "DISPATCH_ENABLED": (True, False),
}


def test_terraform_defaults_equal_the_settings_defaults(tf: Terraform):
    wired = wired_defaults(tf)
    # The project has no default, the bucket's default name is derived from it, QUEUES comes
    # from var.queues (tests/infra/test_terraform_queues.py holds it to them), and the scheduler's
    # account is the one Terraform creates.
    derived = {name for name, default in wired.items() if default is None}
    assert derived == {
        "GOOGLE_CLOUD_PROJECT",
        "BUCKET_NAME",
        "QUEUES",
        "SCHEDULER_SERVICE_ACCOUNT",
    }, derived
    differ = {
        name: (default, setting_default(name))
        for name, default in wired.items()
        if name not in derived and not same(default, setting_default(name))
    }
    assert differ == DIFFERENT_ON_PURPOSE, (
        f"Terraform default vs taskcore.settings default: {differ}"
    )
    assert len(wired) > 20


def test_the_default_comparison_sees_a_difference():
    assert not same(1, 2) and not same(["a"], ("a", "b")) and not same(False, True)
    assert same(3, 3.0) and same(["example_tasks"], ("example_tasks",)) and same(True, True)


# --- next_steps, rendered by Terraform ------------------------------------------------------


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
@pytest.mark.parametrize("api_secret_env", [None, "{}"], ids=["with-keys", "without-keys"])
def test_next_steps_renders_runnable_commands(tmp_path, api_secret_env):
    text = rendered_next_steps(tmp_path, api_secret_env)
    commands = shell_commands(text, "rendered next_steps")
    assert "${" not in text and "%{" not in text, text
    (curl,) = [c for c in commands if c.program == "curl"]
    request = curl_request(curl, ("STUB-uri",))
    assert request is not None and request.headers.get("X-API-Key") == "$API_KEY", curl
    key_line = next(line for line in text.splitlines() if line.startswith("API_KEY="))
    if api_secret_env is None:
        assert "--secret=task-api-keys" in key_line
        assert "gcloud run services proxy STUB-name" in text
    else:
        assert key_line.startswith("API_KEY=none"), key_line
        assert "proxy" not in text and "dashboard is off" in text
    for command, args in dlq_changes(commands):
        chosen, since = selection(args)
        assert not chosen.is_empty or since, command


# --- the API calls, against the real API -----------------------------------------------------


@pytest.fixture
def keyed_api(pipeline, artifacts_dir):
    """The real API with a submit key and an admin key, on the emulators."""
    from tests.integration.api_process import running_api

    keys = {"API_KEYS": "submit-key-1,submit-key-2", "ADMIN_API_KEYS": "admin-key-1"}
    with running_api(pipeline, artifacts_dir, extra_env=keys) as server:
        yield server


# What the printed variables hold when someone follows the guide: the first key of each
# secret (`cut -d, -f1`), and an identity token, which the API must not take for a key.
SHELL_VALUES = {
    "$(gcloud auth print-identity-token)": "eyJhbGciOiJSUzI1NiJ9.identity.token",
    "$TOKEN": "eyJhbGciOiJSUzI1NiJ9.identity.token",
    "$API_KEY": "submit-key-1",
    "$ADMIN_API_KEY": "admin-key-1",
}


def expand(text: str) -> str:
    for name, value in sorted(SHELL_VALUES.items(), key=lambda item: -len(item[0])):
        text = text.replace(name, value)
    assert "$" not in text, f"{text!r} uses a shell value the test does not know"
    return text


@pytest.mark.integration
def test_every_printed_api_call_answers_2xx_as_printed(keyed_api, tf: Terraform, tmp_path):
    commands = guide_commands() + next_steps_commands(tf)
    calls = [(c, r) for c in commands if (r := curl_request(c, API_BASES))]
    assert len(calls) >= 5, "the guide submits, uploads and calls the admin API"
    for command, call in calls:
        files = {}
        for name, value in call.form.items():
            assert value.startswith("@"), f"{command}: -F {name}={value}"
            files[name] = (value[1:], b"id,amount\n1,10\n", "text/csv")
        response = requests.request(
            call.method,
            keyed_api.url + expand(call.path),
            headers={k: expand(v) for k, v in call.headers.items()},
            data=call.data.encode() if call.data is not None else None,
            files=files or None,
            timeout=30,
        )
        assert 200 <= response.status_code < 300, (
            f"{command}\n-> {response.status_code} {response.text}"
        )


@pytest.mark.integration
def test_scheduled_task_examples_are_tasks_the_api_accepts(keyed_api):
    for where, task_json in scheduled_task_examples():
        response = requests.post(
            f"{keyed_api.url}/submit-task",
            data=task_json,
            headers={"Content-Type": "application/json", "X-API-Key": "submit-key-1"},
            timeout=30,
        )
        assert response.status_code == 202, f"{where}: {response.status_code} {response.text}"


@pytest.fixture
def builtin_registry():
    from tests.registries import builtin_registry

    return builtin_registry()


def test_the_guide_is_read_block_by_block():
    assert len(code_blocks(DEPLOY_GUIDE.read_text(), "sh")) >= 10
    indented = code_blocks("- item:\n\n  ```sh\n  taskctl dlq list\n  ```\n", "sh")
    assert indented == [(3, "sh", "taskctl dlq list")]
