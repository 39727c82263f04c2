"""Settings come from the environment only; dead-letter attributes fit Pub/Sub's limits."""

from __future__ import annotations

import pytest

from taskcore.deadletter import dead_letter_attributes, describe_dead_letter
from taskcore.errors import ConfigurationError
from taskcore.settings import Settings, env_var_names


def test_defaults_work_with_no_environment():
    settings = Settings.from_env({})
    assert settings.topic_path == "projects/local-project/topics/background-tasks"
    assert settings.max_delivery_attempts == 5


def test_recipe_variable_names_are_read():
    env = {
        "GOOGLE_CLOUD_PROJECT": "p",
        "TOPIC_NAME": "t",
        "SUBSCRIPTION_NAME": "s",
        "BUCKET_NAME": "b",
        "MAX_MESSAGES": "7",
        "PORT": "9000",
    }
    settings = Settings.from_env(env)
    assert (settings.project_id, settings.topic_name, settings.subscription_name) == ("p", "t", "s")
    assert (settings.bucket_name, settings.max_messages, settings.port) == ("b", 7, 9000)
    assert set(env) <= set(env_var_names())


def test_malformed_setting_names_the_variable():
    with pytest.raises(ConfigurationError, match="MAX_DELIVERY_ATTEMPTS"):
        Settings.from_env({"MAX_DELIVERY_ATTEMPTS": "0"})


def test_pubsubs_dead_letter_policy_is_a_safety_net_above_the_tasks_own_attempts():
    settings = Settings.from_env({})
    assert (settings.max_delivery_attempts, settings.pubsub_max_delivery_attempts) == (5, 100)
    assert settings.refresh_delivery_attempt == 50
    assert Settings.from_env({"MAX_DELIVERY_ATTEMPTS": "2"}).max_delivery_attempts == 2
    tight = Settings.from_env({"MAX_DELIVERY_ATTEMPTS": "9", "PUBSUB_MAX_DELIVERY_ATTEMPTS": "10"})
    assert tight.refresh_delivery_attempt == 5
    with pytest.raises(ConfigurationError, match="above MAX_DELIVERY_ATTEMPTS"):
        Settings.from_env({"MAX_DELIVERY_ATTEMPTS": "10", "PUBSUB_MAX_DELIVERY_ATTEMPTS": "10"})
    with pytest.raises(ConfigurationError, match="PUBSUB_MAX_DELIVERY_ATTEMPTS"):
        Settings.from_env({"PUBSUB_MAX_DELIVERY_ATTEMPTS": "101"})


def test_a_dead_letter_is_keyed_by_its_task_and_life():
    def key(original, task_fields=None):
        return dead_letter_attributes(
            original,
            error_type="e",
            error_message="m",
            delivery_attempt=1,
            source_subscription="s",
            task_fields=task_fields,
        ).get("dead_letter_key")

    assert key({"task_id": "t1"}) == "t1#0"
    assert key({"replay_count": "2"}, {"task_id": "t1"}) == "t1#2"
    assert key({"dead_letter_key": "stale#0", "task_id": "t1", "replay_count": "1"}) == "t1#1"
    assert key({}) is None  # no task id: the DLQ message's own id is its key


def test_dead_letter_attributes_keep_originals_and_add_the_reason():
    attrs = dead_letter_attributes(
        {"task_id": "t1", "custom": "x"},
        error_type="missing_input",
        error_message="input gone",
        delivery_attempt=None,
        source_subscription="projects/p/subscriptions/s",
        task_fields={"task_type": "file_processing"},
    )
    assert attrs["custom"] == "x" and attrs["task_id"] == "t1"
    assert attrs["error_type"] == "missing_input"
    assert attrs["delivery_attempt"] == "0"
    assert attrs["task_type"] == "file_processing"
    assert describe_dead_letter(attrs)["error_message"] == "input gone"


def test_long_error_messages_are_truncated_to_the_attribute_limit():
    attrs = dead_letter_attributes(
        {f"k{i}": "v" for i in range(150)},
        error_type="transient",
        error_message="é" * 5000,
        delivery_attempt=5,
        source_subscription="s",
    )
    assert len(attrs["error_message"].encode()) <= 1024
    assert len(attrs) <= 100
    assert attrs["error_type"] == "transient"


def test_messages_dead_lettered_by_pubsub_are_described_as_exhausted():
    info = describe_dead_letter(
        {
            "CloudPubSubDeadLetterSourceDeliveryCount": "5",
            "CloudPubSubDeadLetterSourceSubscription": "projects/p/subscriptions/s",
        }
    )
    assert info["error_message"] == "delivery attempts exhausted"
    assert info["delivery_attempt"] == 5
