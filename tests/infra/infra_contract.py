"""Reading the deployment files (infra/*.tf, docker-compose.yml) and the env contract.

Nothing here talks to Google Cloud or Docker: the Terraform is read with python-hcl2 and the
compose file with PyYAML, and the tests assert on the wiring they describe.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from terraform_eval import OFFLINE, evaluate

from taskcore.settings import Settings, env_var_names

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE_FILE = REPO / "docker-compose.yml"

# Cloud Run sets these itself, and refuses a deployment that sets them: PORT on every
# service container; the execution name, task index and task count on every job task.
PLATFORM_PROVIDED = {
    "api": frozenset({"PORT"}),
    "worker": frozenset({"CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"}),
}

_REF = re.compile(r"\b(google_[a-z0-9_]+)\.([A-Za-z0-9_-]+)")
# A reference with the instance it picks: google_T.N, google_T.N["key"], google_T.N[each.key].
_INSTANCE_REF = re.compile(r"\b(google_[a-z0-9_]+)\.([A-Za-z0-9_-]+)(?:\[([^\]]+)\])?")
_VAR = re.compile(r"\bvar\.([A-Za-z0-9_]+)")
_LOCAL = re.compile(r"\blocal\.([A-Za-z0-9_]+)")
_EXPR = re.compile(r"^\$\{(.*)\}$", re.S)


def declared_settings() -> set[str]:
    """Every env var shared/taskcore/settings.py reads."""
    return set(env_var_names())


def setting_default(env_var: str) -> Any:
    """The default of the setting that reads env_var (taskcore.settings)."""
    for info in Settings.model_fields.values():
        if info.alias == env_var:
            return info.default
    raise AssertionError(f"no setting reads {env_var}")


def required_cloud_env(scope: str) -> set[str]:
    """What the code of `scope` reads and Terraform must set: its settings minus the platform's."""
    return set(env_var_names(scope)) - PLATFORM_PROVIDED[scope]


def run_terraform(directory: Path, *args: str) -> str:
    """Run the terraform CLI in directory (a configuration needing no provider); its stdout."""
    run = subprocess.run(
        ["terraform", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **OFFLINE},
    )
    assert run.returncode == 0, f"terraform {' '.join(args)}:\n{run.stdout}{run.stderr}"
    return run.stdout


def expression(value: Any) -> str | None:
    """The inside of a "${...}" value (python-hcl2's form of an expression), else None."""
    if isinstance(value, str):
        match = _EXPR.match(value)
        if match:
            return match.group(1).strip()
    return None


def resource_refs(value: Any) -> set[tuple[str, str]]:
    """(type, name) of every google_* resource an expression (or a list/dict of them) names."""
    return {(t, n) for text in strings(value) for t, n in _REF.findall(text)}


def only_ref(value, rtype: str) -> str:
    """The name of the one `rtype` resource an expression refers to."""
    names = {name for t, name in resource_refs(value) if t == rtype}
    assert len(names) == 1, f"{value!r} should name exactly one {rtype}"
    return names.pop()


def member_of(body: dict) -> str:
    """The one member an IAM member resource grants to."""
    member = body.get("member")
    assert isinstance(member, str), f"IAM member resource without a single member: {body}"
    return member


def var_refs(value: Any) -> set[str]:
    return {name for text in strings(value) for name in _VAR.findall(text)}


def local_refs(value: Any) -> set[str]:
    return {name for text in strings(value) for name in _LOCAL.findall(text)}


def strings(value: Any) -> list[str]:
    """Every string inside a parsed HCL value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def block(body: dict, *path: str) -> dict:
    """The single nested block at path (python-hcl2 gives each block as a one-item list)."""
    for name in path:
        value = body.get(name)
        assert isinstance(value, list) and len(value) == 1, f"expected one {name!r} block"
        body = value[0]
    return body


@dataclass
class Terraform:
    """All of infra/*.tf, merged: resources by (type, name), variables, locals, and so on."""

    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)
    # (from, to) of every moved block, as written: "google_T.N", 'google_T.N["key"]'.
    moved: list[tuple[str, str]] = field(default_factory=list)
    # local name -> the file that declares it.
    local_files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> Terraform:
        options = hcl2.SerializationOptions(
            strip_string_quotes=True, explicit_blocks=False, with_comments=False
        )
        tf = cls()
        for path in sorted(directory.glob("*.tf")):
            with path.open() as handle:
                parsed = hcl2.load(handle, serialization_options=options)
            for item in parsed.get("resource", []):
                for rtype, named in item.items():
                    for name, body in named.items():
                        assert (rtype, name) not in tf.resources, f"duplicate {rtype}.{name}"
                        tf.resources[(rtype, name)] = body
            for item in parsed.get("data", []):
                for dtype, named in item.items():
                    for name, body in named.items():
                        tf.data[(dtype, name)] = body
            for item in parsed.get("variable", []):
                tf.variables.update(item)
            for item in parsed.get("locals", []):
                tf.locals.update(item)
                tf.local_files.update(dict.fromkeys(item, path.name))
            for item in parsed.get("output", []):
                tf.outputs.update(item)
            for item in parsed.get("check", []):
                tf.checks.update(item)
            for item in parsed.get("moved", []):
                tf.moved.append((expression(item["from"]), expression(item["to"])))
        return tf

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def one(self, rtype: str) -> tuple[str, dict]:
        found = self.of_type(rtype)
        assert len(found) == 1, f"expected exactly one {rtype}, found {sorted(found)}"
        return next(iter(found.items()))

    def default(self, variable: str) -> Any:
        assert variable in self.variables, f"variable {variable!r} is not declared"
        return self.variables[variable].get("default")

    def map_literal(self, expr: str) -> dict[str, Any]:
        """The map a for_each expression names: local.X (a map literal) or var.X (its default)."""
        match = re.fullmatch(r"(local|var)\.([A-Za-z0-9_]+)", expr)
        assert match, f"for_each = {expr!r}: the tests only follow local.NAME or var.NAME"
        kind, name = match.groups()
        value = self.locals.get(name) if kind == "local" else self.default(name)
        assert isinstance(value, dict), f"{expr} is not a map literal (default) the tests can read"
        return value

    def local_value(self, name: str) -> Any:
        """A local's value: Terraform's evaluation for infra/queues.tf, else the literal."""
        if self.local_files.get(name) == "queues.tf":
            return evaluate()[name]
        return self.locals[name]

    def instance_keys(self, body: dict) -> list[str | None]:
        """The each.key values of a resource: the queues for a per-queue one, else [None]."""
        for_each = expression(body.get("for_each"))
        if for_each is None:
            return [None]
        assert for_each == "local.queues", (
            f"the tests only follow for_each = local.queues: {for_each}"
        )
        return sorted(self.local_value("queues"))

    def interpolate(self, text: str, each_key: str | None = None) -> str:
        """text with ${var.X}, ${local.X}, ${each.*} and ${google_T.N[...].name} replaced.

        Variables take their defaults; locals of infra/queues.tf are Terraform's evaluation;
        each.key is each_key and each.value.F field F of that queue (a per-queue resource);
        a resource's name is its `name` argument, itself interpolated (for the instance an
        index names). Any other expression is an error: the tests only follow these.
        """

        def value(match: re.Match) -> str:
            expr = match.group(1).strip()
            if found := re.fullmatch(r"var\.([A-Za-z0-9_]+)", expr):
                return str(self.default(found.group(1)))
            if found := re.fullmatch(r"local\.([A-Za-z0-9_]+)", expr):
                name = found.group(1)
                if self.local_files.get(name) == "queues.tf":
                    return str(self.local_value(name))
                return self.interpolate(str(self.locals[name]), each_key)
            if expr == "each.key" and each_key is not None:
                return each_key
            if (found := re.fullmatch(r"each\.value\.([A-Za-z0-9_]+)", expr)) and each_key:
                return str(self.local_value("queues")[each_key][found.group(1)])
            pattern = r'(google_[a-z0-9_]+)\.([A-Za-z0-9_-]+)(?:\[(each\.key|"[^"]*")\])?\.name'
            if found := re.fullmatch(pattern, expr):
                body = self.resources[(found.group(1), found.group(2))]
                index = found.group(3)
                key = each_key if index == "each.key" else index.strip('"') if index else None
                return self.interpolate(str(body["name"]), key)
            raise AssertionError(f"cannot interpolate ${{{expr}}} in {text!r}")

        return re.sub(r"\$\{((?:[^{}]|\{[^{}]*\})*)\}", value, text)

    def container_env(self, container: dict) -> dict[str, tuple[str, Any]]:
        """Env of a Cloud Run container: name -> ("plain", value) or ("secret", secret_key_ref).

        Static `env` blocks and `dynamic "env"` blocks over a local or variable map both count.
        """
        env: dict[str, tuple[str, Any]] = {}

        def add(name: str, kind: str, value: Any) -> None:
            assert name not in env, f"env {name} is set twice"
            env[name] = (kind, value)

        for item in container.get("env", []):
            if "value_source" in item:
                add(item["name"], "secret", block(item, "value_source", "secret_key_ref"))
            else:
                add(item["name"], "plain", item.get("value"))
        for dyn in container.get("dynamic", []):
            for label, body in dyn.items():
                if label != "env":
                    continue
                source = self.map_literal(expression(body["for_each"]) or "")
                content = block(body, "content")
                assert expression(content["name"]) == "env.key", "dynamic env must name env.key"
                is_secret = "value_source" in content
                if is_secret:
                    ref = block(content, "value_source", "secret_key_ref")
                    assert expression(ref["secret"]) == "env.value"
                else:
                    assert expression(content["value"]) == "env.value"
                for name, value in source.items():
                    add(name, "secret" if is_secret else "plain", value)
        return env


def runtime_container(tf: Terraform, component: str) -> dict:
    """The one container of the Cloud Run service ("api") or job ("worker")."""
    if component == "api":
        _, service = tf.one("google_cloud_run_v2_service")
        return block(service, "template")["containers"][0]
    _, job = tf.one("google_cloud_run_v2_job")
    return block(job, "template", "template")["containers"][0]


def runtime_account(tf: Terraform, component: str) -> str:
    """Terraform name of the service account the API or the worker runs as."""
    if component == "api":
        _, service = tf.one("google_cloud_run_v2_service")
        ref = block(service, "template")["service_account"]
    else:
        _, job = tf.one("google_cloud_run_v2_job")
        ref = block(job, "template", "template")["service_account"]
    (account,) = {n for t, n in resource_refs(ref) if t == "google_service_account"}
    return account


def instance_addresses(tf: Terraform, value: Any, owner: dict | None = None) -> set[str]:
    """The google_* resource instances an expression names, as addresses.

    "google_T.N": a single resource, or every instance of a for_each one;
    'google_T.N["k"]': one instance; "google_T.N[local.X]": the instances a resource with
    for_each = local.X (the owner) picks with [each.key] when local.X is not the target's own
    for_each (a subset, such as the queues that have a schedule).
    """
    owner_each = expression(owner.get("for_each")) if owner else None
    addresses = set()
    for text in strings(value):
        for rtype, name, index in _INSTANCE_REF.findall(text):
            base = f"{rtype}.{name}"
            index = index.strip()
            if index == "each.key" and (rtype, name) in tf.resources:
                target_each = expression(tf.resources[(rtype, name)].get("for_each"))
                addresses.add(base if owner_each == target_each else f"{base}[{owner_each}]")
            else:
                addresses.add(f"{base}[{index}]" if index else base)
    return addresses


def covers(granted_on: str, needed_on: str) -> bool:
    """A grant on every instance of a resource covers a need on any of its instances."""
    return granted_on == needed_on or needed_on.startswith(granted_on + "[")


# The grant resource types, and the argument naming what each grants on.
GRANT_TARGETS = {
    "google_pubsub_topic_iam_member": "topic",
    "google_pubsub_subscription_iam_member": "subscription",
    "google_storage_bucket_iam_member": "bucket",
    "google_cloud_run_v2_job_iam_member": "name",
    "google_cloud_run_v2_service_iam_member": "name",
    "google_secret_manager_secret_iam_member": "secret_id",
    "google_project_iam_member": "project",
}


def grants_by_account(tf: Terraform) -> dict[str, set[tuple[str, str]]]:
    """Service account -> {(role, address of what it is granted on)}.

    Addresses are those of instance_addresses; a grant on the project is "project", and
    grants looped over a variable's map (secrets) name the variable: "var.NAME".
    """
    grants: dict[str, set[tuple[str, str]]] = {}
    for (rtype, _), body in tf.resources.items():
        if rtype not in GRANT_TARGETS:
            continue
        accounts = {
            n for t, n in resource_refs(body.get("member")) if t == "google_service_account"
        }
        if not accounts:
            continue
        target = body[GRANT_TARGETS[rtype]]
        if rtype == "google_project_iam_member":
            assert var_refs(target) == {"project_id"}, f"a grant on another project: {target}"
            addresses = {"project"}
        elif expression(target) == "each.value" and isinstance(body.get("for_each"), dict):
            addresses = instance_addresses(tf, body["for_each"])
        elif expression(target) == "each.value":
            addresses = {f"var.{v}" for v in var_refs(body.get("for_each"))}
        else:
            addresses = instance_addresses(tf, target, owner=body)
        for account in accounts:
            for address in addresses:
                grants.setdefault(account, set()).add((body["role"], address))
    return grants


def service_env(service: dict) -> dict[str, str]:
    """A compose service's environment as a dict, whichever of the two forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}
