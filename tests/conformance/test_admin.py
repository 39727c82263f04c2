"""Conformance: topics and subscriptions administration, and the errors it answers with."""

from __future__ import annotations

import copy

import pytest
from google.api_core import exceptions

pytestmark = pytest.mark.integration

WEEK = 7 * 24 * 3600


def test_topic_create_get_list_delete(ps):
    names = [ps.topic(n) for n in ("topic-c", "topic-a", "topic-b")]
    assert ps.pub.get_topic(topic=names[0]).name == names[0]
    assert [t.name for t in ps.pub.list_topics(project=ps.project)] == sorted(names)
    ps.pub.delete_topic(topic=names[0])
    with pytest.raises(exceptions.NotFound):
        ps.pub.get_topic(topic=names[0])
    assert [t.name for t in ps.pub.list_topics(project=ps.project)] == sorted(names[1:])


def test_list_topics_pages_in_name_order(ps):
    names = sorted(ps.topic(f"topic-{i}") for i in range(5))
    pages = ps.pub.list_topics(request={"project": ps.project, "page_size": 2}).pages
    assert [[t.name for t in page.topics] for page in pages] == [names[0:2], names[2:4], names[4:]]
    # The page token is the name the next page starts at.
    first = ps.pub.api.list_topics(request={"project": ps.project, "page_size": 2})
    assert first._response.next_page_token == names[2]


@pytest.mark.parametrize(
    "topic_id",
    ["ab", "1topic", "goog-topic", "bad*chars", "a" + "b" * 255],
    ids=["too-short", "digit-first", "goog-prefix", "bad-chars", "too-long"],
)
def test_invalid_topic_names(ps, topic_id):
    with pytest.raises(exceptions.InvalidArgument):
        ps.pub.create_topic(name=ps.topic_path(topic_id))


def test_topic_name_limits_and_characters_accepted(ps):
    for topic_id in ("abc", "a-b_c.d~e+f%g", "a" + "b" * 254):
        assert ps.topic(topic_id) == ps.topic_path(topic_id)
    with pytest.raises(exceptions.InvalidArgument):
        ps.pub.create_topic(name="not/a/topic")


def test_topic_errors(ps):
    topic = ps.topic()
    with pytest.raises(exceptions.AlreadyExists):
        ps.topic()
    missing = ps.topic_path("missing")
    with pytest.raises(exceptions.NotFound):
        ps.pub.get_topic(topic=missing)
    with pytest.raises(exceptions.NotFound):
        ps.pub.delete_topic(topic=missing)
    with pytest.raises(exceptions.NotFound):
        ps.publish(missing, b"x")
    with pytest.raises(exceptions.InvalidArgument):
        ps.pub.api.publish(topic=topic, messages=[])
    assert list(ps.pub.list_topic_subscriptions(topic=missing)) == []


def test_list_topic_subscriptions(ps):
    topic, other = ps.topic(), ps.topic("topic-other")
    subs = sorted(ps.subscription(n, topic) for n in ("sub-b", "sub-a"))
    ps.subscription("sub-other", other)
    assert list(ps.pub.list_topic_subscriptions(topic=topic)) == subs


def test_subscription_defaults(ps):
    topic = ps.topic()
    sub = ps.sub.get_subscription(subscription=ps.subscription("sub-plain", topic))
    assert sub.topic == topic
    assert sub.ack_deadline_seconds == 10
    assert sub.message_retention_duration.total_seconds() == WEEK
    assert "push_config" in sub
    assert "dead_letter_policy" not in sub
    assert "retry_policy" not in sub
    assert not sub.retain_acked_messages


def test_subscription_settings_round_trip(ps):
    topic, dead = ps.topic(), ps.topic("topic-dead")
    name = ps.subscription(
        "sub-full",
        topic,
        ack_deadline_seconds=30,
        message_retention_duration={"seconds": 600},
        retain_acked_messages=True,
        dead_letter_policy={"dead_letter_topic": dead},
        retry_policy={"minimum_backoff": {"seconds": 1}},
    )
    sub = ps.sub.get_subscription(subscription=name)
    assert sub.ack_deadline_seconds == 30
    assert sub.message_retention_duration.total_seconds() == 600
    assert sub.retain_acked_messages
    # Unset parts of the policies get Google's defaults.
    assert sub.dead_letter_policy.dead_letter_topic == dead
    assert sub.dead_letter_policy.max_delivery_attempts == 5
    assert sub.retry_policy.minimum_backoff.total_seconds() == 1
    assert sub.retry_policy.maximum_backoff.total_seconds() == 600
    empty = ps.sub.get_subscription(subscription=ps.subscription("sub-rp", topic, retry_policy={}))
    assert empty.retry_policy.minimum_backoff.total_seconds() == 10
    assert empty.retry_policy.maximum_backoff.total_seconds() == 600
    # Google's emulator takes ack deadlines below the API's 10 s minimum; tests rely on it.
    short = ps.subscription("sub-short", topic, ack_deadline_seconds=1)
    assert ps.sub.get_subscription(subscription=short).ack_deadline_seconds == 1
    zero = ps.subscription("sub-zero", topic, ack_deadline_seconds=0)
    assert ps.sub.get_subscription(subscription=zero).ack_deadline_seconds == 10


BAD_SETTINGS = {
    "ack-deadline-601": ({"ack_deadline_seconds": 601}, exceptions.InvalidArgument),
    "ack-deadline-negative": ({"ack_deadline_seconds": -1}, exceptions.InvalidArgument),
    "retention-599s": (
        {"message_retention_duration": {"seconds": 599}},
        exceptions.InvalidArgument,
    ),
    "retention-8d": (
        {"message_retention_duration": {"seconds": 8 * 86400}},
        exceptions.InvalidArgument,
    ),
    "max-attempts-4": ({"dead_letter_policy": {"max_delivery_attempts": 4}}, exceptions.OutOfRange),
    "max-attempts-101": (
        {"dead_letter_policy": {"max_delivery_attempts": 101}},
        exceptions.OutOfRange,
    ),
    "dead-letter-topic-missing": (
        {"dead_letter_policy": {"dead_letter_topic": "missing"}},
        exceptions.NotFound,
    ),
    "dead-letter-topic-unset": (
        {"dead_letter_policy": {"max_delivery_attempts": 5}},
        exceptions.NotFound,
    ),
    "min-backoff-601": (
        {"retry_policy": {"minimum_backoff": {"seconds": 601}}},
        exceptions.InvalidArgument,
    ),
    "max-backoff-601": (
        {"retry_policy": {"maximum_backoff": {"seconds": 601}}},
        exceptions.InvalidArgument,
    ),
    "max-below-min": (
        {"retry_policy": {"minimum_backoff": {"seconds": 20}, "maximum_backoff": {"seconds": 10}}},
        exceptions.InvalidArgument,
    ),
    "max-below-default-min": (
        {"retry_policy": {"maximum_backoff": {"seconds": 5}}},
        exceptions.InvalidArgument,
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_invalid_subscription_settings(ps, case):
    settings, error = copy.deepcopy(BAD_SETTINGS[case])
    topic, dead = ps.topic(), ps.topic("topic-dead")
    policy = settings.get("dead_letter_policy")
    if policy is not None and "dead_letter_topic" not in policy:
        policy = settings["dead_letter_policy"] = {"dead_letter_topic": dead, **policy}
    if policy is not None and policy["dead_letter_topic"] == "missing":
        policy["dead_letter_topic"] = ps.topic_path("missing")
    if case == "dead-letter-topic-unset":
        policy["dead_letter_topic"] = ""
    with pytest.raises(error):
        ps.subscription("sub-bad", topic, **settings)
    with pytest.raises(exceptions.NotFound):
        ps.sub.get_subscription(subscription=ps.sub_path("sub-bad"))


def test_subscription_errors(ps):
    topic = ps.topic()
    name = ps.subscription("sub-one", topic)
    with pytest.raises(exceptions.AlreadyExists):
        ps.subscription("sub-one", topic)
    with pytest.raises(exceptions.NotFound):
        ps.subscription("sub-two", ps.topic_path("missing"))
    for bad in ("ab", "1sub", "goog-sub"):
        with pytest.raises(exceptions.InvalidArgument):
            ps.subscription(bad, topic)
    ps.sub.delete_subscription(subscription=name)
    for call in (ps.sub.get_subscription, ps.sub.delete_subscription):
        with pytest.raises(exceptions.NotFound):
            call(subscription=name)


def test_list_subscriptions(ps):
    topic = ps.topic()
    names = sorted(ps.subscription(f"sub-{i}", topic) for i in range(3))
    assert [s.name for s in ps.sub.list_subscriptions(project=ps.project)] == names
    pages = ps.sub.list_subscriptions(request={"project": ps.project, "page_size": 2}).pages
    assert [[s.name for s in p.subscriptions] for p in pages] == [names[:2], names[2:]]


def _update(ps, name, paths, **fields):
    request = {"subscription": {"name": name, **fields}, "update_mask": {"paths": paths}}
    return ps.sub.update_subscription(request=request)


def test_update_subscription(ps):
    topic, dead = ps.topic(), ps.topic("topic-dead")
    name = ps.subscription("sub-up", topic)
    assert (
        _update(ps, name, ["ack_deadline_seconds"], ack_deadline_seconds=45).ack_deadline_seconds
        == 45
    )
    updated = _update(
        ps,
        name,
        ["dead_letter_policy", "retry_policy"],
        dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 7},
        retry_policy={"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 2}},
    )
    assert updated.dead_letter_policy.max_delivery_attempts == 7
    assert updated.retry_policy.maximum_backoff.total_seconds() == 2
    assert ps.sub.get_subscription(subscription=name).ack_deadline_seconds == 45
    cleared = _update(ps, name, ["dead_letter_policy", "retry_policy"])
    assert "dead_letter_policy" not in cleared and "retry_policy" not in cleared
    assert (
        _update(ps, name, ["ack_deadline_seconds"], ack_deadline_seconds=0).ack_deadline_seconds
        == 10
    )


def test_update_subscription_errors(ps):
    topic = ps.topic()
    name = ps.subscription("sub-up", topic)
    cases = [
        ([], {"ack_deadline_seconds": 30}, exceptions.InvalidArgument),
        (["topic"], {"topic": ps.topic_path("other")}, exceptions.InvalidArgument),
        (["name"], {}, exceptions.InvalidArgument),
        (
            ["enable_message_ordering"],
            {"enable_message_ordering": True},
            exceptions.InvalidArgument,
        ),
        (["bogus"], {}, exceptions.InvalidArgument),
        (["ack_deadline_seconds"], {"ack_deadline_seconds": 601}, exceptions.InvalidArgument),
        (
            ["message_retention_duration"],
            {"message_retention_duration": {"seconds": 599}},
            exceptions.InvalidArgument,
        ),
        (
            ["dead_letter_policy"],
            {"dead_letter_policy": {"max_delivery_attempts": 6}},
            exceptions.NotFound,
        ),
    ]
    for paths, fields, error in cases:
        with pytest.raises(error):
            _update(ps, name, paths, **fields)
    with pytest.raises(exceptions.NotFound):
        _update(ps, ps.sub_path("missing"), ["ack_deadline_seconds"], ack_deadline_seconds=30)
    assert ps.sub.get_subscription(subscription=name).ack_deadline_seconds == 10


def test_deleting_a_topic_detaches_its_subscriptions(ps):
    topic = ps.topic()
    name = ps.subscription("sub-orphan", topic)
    ps.pub.delete_topic(topic=topic)
    assert ps.sub.get_subscription(subscription=name).topic == "_deleted-topic_"
    assert [s.topic for s in ps.sub.list_subscriptions(project=ps.project)] == ["_deleted-topic_"]
    assert ps.pull_now(name) == []
    assert list(ps.pub.list_topic_subscriptions(topic=topic)) == []
