"""Conformance: snapshots, and Seek to one."""

from __future__ import annotations

import time

import pytest
from google.api_core import exceptions

pytestmark = pytest.mark.integration

WEEK = 7 * 24 * 3600


def _snapshot_path(ps, name: str) -> str:
    return f"{ps.project}/snapshots/{name}"


def _create(ps, name: str, subscription: str, **fields):
    request = {"name": _snapshot_path(ps, name), "subscription": subscription, **fields}
    return ps.sub.create_snapshot(request=request)


def _seek(ps, subscription: str, snapshot: str) -> None:
    ps.sub.seek(request={"subscription": subscription, "snapshot": snapshot})


def _data(received) -> list[bytes]:
    return sorted(m.message.data for m in received)


def test_snapshot_create_get_list_delete(ps):
    """Real Pub/Sub keeps a snapshot's labels (ours too); Google's emulator drops them."""
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    created = _create(ps, "snap-b", sub, labels={"team": "ops"})
    other = _create(ps, "snap-a", sub)
    assert (created.name, created.topic) == (_snapshot_path(ps, "snap-b"), topic)
    assert dict(created.labels) == ({} if ps.kind == "google" else {"team": "ops"})
    assert ps.sub.get_snapshot(snapshot=created.name) == created
    listed = ps.sub.list_snapshots(project=ps.project)
    assert [s.name for s in listed] == [other.name, created.name]
    assert list(ps.pub.list_topic_snapshots(topic=topic)) == [other.name, created.name]
    assert list(ps.pub.list_topic_snapshots(topic=ps.topic_path("missing"))) == []
    ps.sub.delete_snapshot(snapshot=created.name)
    for call in (ps.sub.get_snapshot, ps.sub.delete_snapshot):
        with pytest.raises(exceptions.NotFound):
            call(snapshot=created.name)
    assert [s.name for s in ps.sub.list_snapshots(project=ps.project)] == [other.name]


def test_a_snapshot_lives_seven_days(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    ps.publish(topic, b"x")
    before = time.time()
    snapshot = _create(ps, "snap-a", sub)
    lifetime = snapshot.expire_time.timestamp() - before
    assert WEEK - 5 <= lifetime <= WEEK + 1


def test_snapshot_errors(ps):
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    _create(ps, "snap-a", sub)
    with pytest.raises(exceptions.AlreadyExists):
        _create(ps, "snap-a", sub)
    with pytest.raises(exceptions.NotFound):
        _create(ps, "snap-b", ps.sub_path("missing"))
    for bad in ("ab", "1snap", "goog-snap"):
        with pytest.raises(exceptions.InvalidArgument):
            _create(ps, bad, sub)
    with pytest.raises(exceptions.InvalidArgument):
        ps.sub.get_snapshot(snapshot="garbage")


def test_a_snapshot_without_a_name(ps):
    """Pub/Sub's API reference: the server names it, in the subscription's project. Google's
    emulator refuses it."""
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    request = {"name": "", "subscription": sub}
    if ps.kind == "google":
        with pytest.raises(exceptions.InvalidArgument):
            ps.sub.create_snapshot(request=request)
        return
    snapshot = ps.sub.create_snapshot(request=request)
    assert snapshot.name.startswith(f"{ps.project}/snapshots/")
    assert ps.sub.get_snapshot(snapshot=snapshot.name) == snapshot


def test_seek_to_a_snapshot(ps):
    """Unacknowledged again: what was unacknowledged when the snapshot was taken (leased or
    not) and everything published since; acknowledged: everything else."""
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic, ack_deadline_seconds=60)
    ps.publish(topic, b"m1", b"m2", b"m3")
    received = ps.wait_for(sub, 3)
    ps.ack(sub, [m for m in received if m.message.data == b"m1"])
    snapshot = _create(ps, "snap-a", sub).name
    ps.publish(topic, b"m4")
    ps.ack(sub, received)
    ps.ack(sub, ps.wait_for(sub, 1))
    assert ps.pull_now(sub) == []
    _seek(ps, sub, snapshot)
    assert _data(ps.wait_for(sub, 3)) == [b"m2", b"m3", b"m4"]
    assert ps.pull_now(sub) == []


def test_seek_another_subscription_of_the_topic_to_a_snapshot(ps):
    topic = ps.topic()
    source = ps.subscription("sub-source", topic, ack_deadline_seconds=60)
    other = ps.subscription("sub-other", topic, ack_deadline_seconds=60)
    ps.publish(topic, b"m1", b"m2")
    ps.ack(source, [m for m in ps.wait_for(source, 2) if m.message.data == b"m1"])
    snapshot = _create(ps, "snap-a", source).name
    ps.publish(topic, b"m3")
    _seek(ps, other, snapshot)
    assert _data(ps.wait_for(other, 2)) == [b"m2", b"m3"]
    assert ps.pull_now(other) == []


def test_a_snapshot_outlives_its_subscription(ps):
    """The snapshot keeps its messages for any subscription of the topic, even one made after
    they were published and after the source is gone. Google's emulator gives such a
    subscription nothing back (it restores only messages the subscription itself had)."""
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    ps.publish(topic, b"kept")
    snapshot = _create(ps, "snap-a", sub).name
    ps.sub.delete_subscription(subscription=sub)
    later = ps.subscription("sub-later", topic)
    _seek(ps, later, snapshot)
    restored = ps.wait_for(later, 1, timeout=2 if ps.kind == "google" else 10)
    assert _data(restored) == ([] if ps.kind == "google" else [b"kept"])


def test_seek_errors(ps):
    topic, other_topic = ps.topic(), ps.topic("topic-other")
    sub = ps.subscription("sub-main", topic)
    elsewhere = ps.subscription("sub-elsewhere", other_topic)
    snapshot = _create(ps, "snap-a", sub).name
    with pytest.raises(exceptions.FailedPrecondition):
        _seek(ps, elsewhere, snapshot)
    with pytest.raises(exceptions.NotFound):
        _seek(ps, sub, _snapshot_path(ps, "missing"))
    with pytest.raises(exceptions.NotFound):
        _seek(ps, ps.sub_path("missing"), snapshot)
    with pytest.raises(exceptions.InvalidArgument):
        _seek(ps, sub, "garbage")


def test_deleting_the_topic_keeps_its_snapshots(ps):
    """The snapshot stays, naming its old topic; neither the detached subscription nor (but on
    Google's emulator) one of a new topic of that name can seek to it."""
    topic = ps.topic()
    sub = ps.subscription("sub-main", topic)
    snapshot = _create(ps, "snap-a", sub)
    ps.pub.delete_topic(topic=topic)
    assert ps.sub.get_snapshot(snapshot=snapshot.name) == snapshot
    with pytest.raises(exceptions.FailedPrecondition):
        _seek(ps, sub, snapshot.name)
    # A topic made again under the same name is another topic, as Google's emulator's own
    # error message says; yet it lets that topic's subscriptions seek to the snapshot.
    ps.topic()
    new_sub = ps.subscription("sub-new", topic)
    if ps.kind == "google":
        _seek(ps, new_sub, snapshot.name)
        return
    with pytest.raises(exceptions.FailedPrecondition):
        _seek(ps, new_sub, snapshot.name)
    assert list(ps.pub.list_topic_snapshots(topic=topic)) == []


def test_update_snapshot_labels(ps):
    """Pub/Sub's UpdateSnapshot changes labels; Google's emulator does not implement it."""
    topic = ps.topic()
    snapshot = _create(ps, "snap-a", ps.subscription("sub-main", topic), labels={"a": "1"})
    request = {
        "snapshot": {"name": snapshot.name, "labels": {"b": "2"}},
        "update_mask": {"paths": ["labels"]},
    }
    if ps.kind == "google":
        with pytest.raises(exceptions.MethodNotImplemented):
            ps.sub.update_snapshot(request=request)
        return
    assert dict(ps.sub.update_snapshot(request=request).labels) == {"b": "2"}
    assert dict(ps.sub.get_snapshot(snapshot=snapshot.name).labels) == {"b": "2"}
    for paths in ([], ["expire_time"], ["topic"], ["bogus"]):
        request["update_mask"] = {"paths": paths}
        with pytest.raises(exceptions.InvalidArgument):
            ps.sub.update_snapshot(request=request)
    request["snapshot"]["name"] = _snapshot_path(ps, "missing")
    request["update_mask"] = {"paths": ["labels"]}
    with pytest.raises(exceptions.NotFound):
        ps.sub.update_snapshot(request=request)
