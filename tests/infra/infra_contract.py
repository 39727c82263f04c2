"""Reading the deployment files (infra/*.tf, docker-compose.yml) and the env contract.

Nothing here talks to Google Cloud or Docker: the Terraform is read with python-hcl2 and the
compose file with PyYAML, and the tests assert on the wiring they describe.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

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
_VAR = re.compile(r"\bvar\.([A-Za-z0-9_]+)")
_LOCAL = re.compile(r"\blocal\.([A-Za-z0-9_]+)")
_EXPR = re.compile(r"^\$\{(.*)\}$", re.S)


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
        ["terraform", *args], cwd=directory, capture_output=True, text=True, timeout=120
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
            for item in parsed.get("output", []):
                tf.outputs.update(item)
            for item in parsed.get("check", []):
                tf.checks.update(item)
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

    def interpolate(self, text: str) -> str:
        """text with ${var.X}, ${local.X} and ${google_T.N.name} replaced by their values.

        Variables take their defaults; a resource's name is its `name` argument, itself
        interpolated. Any other expression is an error: the tests only follow these.
        """

        def value(match: re.Match) -> str:
            expr = match.group(1).strip()
            if found := re.fullmatch(r"var\.([A-Za-z0-9_]+)", expr):
                return str(self.default(found.group(1)))
            if found := re.fullmatch(r"local\.([A-Za-z0-9_]+)", expr):
                return self.interpolate(str(self.locals[found.group(1)]))
            if found := re.fullmatch(r"(google_[a-z0-9_]+)\.([A-Za-z0-9_-]+)\.name", expr):
                body = self.resources[(found.group(1), found.group(2))]
                return self.interpolate(str(body["name"]))
            raise AssertionError(f"cannot interpolate ${{{expr}}} in {text!r}")

        return re.sub(r"\$\{([^}]*)\}", value, text)

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


def grants_by_account(tf: Terraform) -> dict[str, set[tuple[str, str]]]:
    """Service account -> {(role, "type.name" of the resource granted on)}.

    Grants looped over a variable's map (secrets) name the variable instead: "var.NAME".
    """
    targets = {
        "google_pubsub_topic_iam_member": "topic",
        "google_pubsub_subscription_iam_member": "subscription",
        "google_storage_bucket_iam_member": "bucket",
        "google_cloud_run_v2_job_iam_member": "name",
        "google_cloud_run_v2_service_iam_member": "name",
        "google_secret_manager_secret_iam_member": "secret_id",
        "google_project_iam_member": "project",
    }
    grants: dict[str, set[tuple[str, str]]] = {}
    for (rtype, _), body in tf.resources.items():
        if rtype not in targets:
            continue
        accounts = {
            n for t, n in resource_refs(body.get("member")) if t == "google_service_account"
        }
        if not accounts:
            continue
        target = body[targets[rtype]]
        if expression(target) == "each.value" and isinstance(body.get("for_each"), dict):
            refs = resource_refs(body["for_each"])
        elif expression(target) == "each.value":
            refs = {("var", v) for v in var_refs(body.get("for_each"))}
        else:
            # A grant on the project names it by variable: "var.project_id".
            refs = resource_refs(target) or {("var", v) for v in var_refs(target)}
        for account in accounts:
            for ref_type, ref_name in refs:
                grants.setdefault(account, set()).add((body["role"], f"{ref_type}.{ref_name}"))
    return grants


def service_env(service: dict) -> dict[str, str]:
    """A compose service's environment as a dict, whichever of the two forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}
