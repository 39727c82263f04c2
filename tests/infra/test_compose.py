"""docker-compose.yml runs the stack on emulators with the same env contract as the code."""

from __future__ import annotations

import re

import pytest
from infra_contract import PLATFORM_PROVIDED, Terraform, service_env

from taskcore.settings import env_var_names

# Compose variable -> Terraform variable configuring the same thing on the subscription.
SUBSCRIPTION_KNOBS = {
    "MAX_DELIVERY_ATTEMPTS": "max_delivery_attempts",
    "PUBSUB_MAX_DELIVERY_ATTEMPTS": "pubsub_max_delivery_attempts",
    "ACK_DEADLINE_SECONDS": "ack_deadline_seconds",
    "RETRY_MIN_BACKOFF_SECONDS": "retry_min_backoff_seconds",
    "RETRY_MAX_BACKOFF_SECONDS": "retry_max_backoff_seconds",
}


def services(compose: dict) -> dict[str, dict]:
    assert isinstance(compose.get("services"), dict), "docker-compose.yml has no services"
    return compose["services"]


def command_of(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def local_env(scope: str) -> set[str]:
    """What the code of `scope` reads locally: its settings plus the emulator/bootstrap knobs.

    Cloud Run's own variables stay unset (the code has defaults); PORT is set for the API
    because the published port must match it.
    """
    return (set(env_var_names(scope)) | set(env_var_names("local"))) - (PLATFORM_PROVIDED["worker"])


@pytest.mark.parametrize(("name", "scope"), [("api", "api"), ("worker", "worker")])
def test_every_env_var_the_code_reads_is_set(compose, name, scope):
    env = service_env(services(compose)[name])
    missing = local_env(scope) - set(env)
    assert not missing, f"compose service {name!r} does not set {sorted(missing)}"
    unknown = set(env) - set(env_var_names())
    assert not unknown, f"{name!r} sets {sorted(unknown)}, which no setting reads (a typo?)"


def test_bootstrap_creates_what_the_others_use(compose):
    env = service_env(services(compose)["bootstrap"])
    missing = (set(env_var_names("local")) | set(env_var_names("both"))) - set(env)
    assert not missing, f"bootstrap does not set {sorted(missing)}"
    assert "taskctl bootstrap" in command_of(services(compose)["bootstrap"])


def test_services_agree_on_shared_values(compose):
    envs = {name: service_env(services(compose)[name]) for name in ("bootstrap", "api", "worker")}
    shared = set.intersection(*(set(env) for env in envs.values()))
    for var in sorted(shared):
        values = {name: env[var] for name, env in envs.items()}
        assert len(set(values.values())) == 1, f"{var} differs between services: {values}"


def test_emulator_hosts_point_at_the_compose_services(compose):
    svc = services(compose)
    for name in ("bootstrap", "api", "worker"):
        env = service_env(svc[name])

        host, _, port = env["PUBSUB_EMULATOR_HOST"].partition(":")
        assert host in svc, f"PUBSUB_EMULATOR_HOST={env['PUBSUB_EMULATOR_HOST']} is no service"
        assert f"--host-port=0.0.0.0:{port}" in command_of(svc[host])
        assert "emulators pubsub start" in command_of(svc[host])

        match = re.fullmatch(r"http://([\w-]+):(\d+)", env["STORAGE_EMULATOR_HOST"])
        assert match, (
            f"STORAGE_EMULATOR_HOST={env['STORAGE_EMULATOR_HOST']} is not http://host:port"
        )
        host, port = match.groups()
        assert host in svc, f"STORAGE_EMULATOR_HOST names {host!r}, which is no service"
        gcs_command = command_of(svc[host])
        assert "devstack.emulators.gcs" in gcs_command
        assert "--host 0.0.0.0" in gcs_command and f"--port {port}" in gcs_command


def test_pubsub_emulator_image_is_pinned(compose):
    image = services(compose)["pubsub"]["image"]
    assert re.fullmatch(
        r"gcr\.io/google\.com/cloudsdktool/google-cloud-cli:\d+\.\d+\.\d+-emulators(@sha256:[0-9a-f]{64})?",
        image,
    ), image


def test_start_order_waits_for_health_and_bootstrap(compose):
    svc = services(compose)
    for name, service in svc.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a list"
        for target, spec in depends.items():
            condition = (spec or {}).get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {target}: condition {condition!r}"
            )
            if condition == "service_healthy":
                assert "healthcheck" in svc[target], f"{target} has no healthcheck to wait for"
    for name in ("pubsub", "gcs"):
        assert svc["bootstrap"]["depends_on"][name]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert svc[name]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in svc["api"]


def test_api_and_worker_commands(compose):
    svc = services(compose)
    assert "taskctl api" in command_of(svc["api"])
    worker = command_of(svc["worker"])
    # Workers run on demand, started by the API's dispatcher in the Cloud Run Jobs stand-in,
    # which the tick reaches as Cloud Scheduler does.
    assert "devstack.local_jobs" in worker and "--port 8123" in worker
    assert "--tick-url http://api:8080/internal/tick" in worker
    assert service_env(svc["api"])["CLOUD_RUN_EMULATOR_HOST"] == "worker:8123"


def test_api_publishes_the_port_it_listens_on(compose):
    api = services(compose)["api"]
    port = service_env(api)["PORT"]
    published = [str(p).rsplit(":", 1)[-1] for p in api.get("ports", [])]
    assert port in published, f"PORT={port} but ports publish {published}"


@pytest.mark.parametrize(("variable", "tf_variable"), sorted(SUBSCRIPTION_KNOBS.items()))
def test_local_subscription_matches_terraform(compose, tf: Terraform, variable, tf_variable):
    value = service_env(services(compose)["bootstrap"])[variable]
    assert float(value) == float(tf.default(tf_variable)), (
        f"compose {variable}={value} but var.{tf_variable} defaults to {tf.default(tf_variable)}"
    )
