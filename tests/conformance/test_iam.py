"""Conformance: google.iam.v1.IAMPolicy on topics, subscriptions and snapshots.

Google's emulator checks the resource name and then answers UNIMPLEMENTED to all three
RPCs, so only `test_iam_policy_service` and the name checks run the same calls on both;
the rest specify real Pub/Sub's behaviour (its API reference) on ours, skipped on Google's.
"""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.iam.v1 import policy_pb2

pytestmark = pytest.mark.integration

# IAM's etag of a policy that was never set: "ACAB" in base64.
INITIAL_ETAG = b"\x00\x20\x01"
GOOGLE_LACKS_IAM = (
    "Google's emulator answers UNIMPLEMENTED to google.iam.v1.IAMPolicy "
    "(recorded by test_iam_policy_service)"
)


@pytest.fixture
def iam(ps):
    """ps on an emulator that keeps IAM policies (ours)."""
    if ps.kind == "google":
        pytest.skip(GOOGLE_LACKS_IAM)
    return ps


def _policy(*bindings: tuple[str, list[str]], etag: bytes = b"", version: int = 0):
    policy = policy_pb2.Policy(etag=etag, version=version)
    for role, members in bindings:
        policy.bindings.add(role=role, members=members)
    return policy


def _get(ps, resource: str, **options):
    request = {"resource": resource}
    if options:
        request["options"] = options
    return ps.pub.get_iam_policy(request=request)


def _set(ps, resource: str, policy, mask: list[str] | None = None):
    request = {"resource": resource, "policy": policy}
    if mask is not None:
        request["update_mask"] = {"paths": mask}
    return ps.pub.set_iam_policy(request=request)


def _test(ps, resource: str, permissions: list[str]) -> list[str]:
    request = {"resource": resource, "permissions": permissions}
    return list(ps.pub.test_iam_permissions(request=request).permissions)


def _bindings(policy) -> list[tuple[str, list[str]]]:
    return sorted((b.role, list(b.members)) for b in policy.bindings)


EDITORS = ("roles/pubsub.editor", ["domain:google.com"])
VIEWERS = ("roles/pubsub.viewer", ["group:cloud-logs@google.com"])


def test_iam_policy_service(ps):
    """Ours serves all three IAMPolicy RPCs; Google's emulator implements none of them."""
    topic = ps.topic()
    calls = [
        lambda: _get(ps, topic),
        lambda: _set(ps, topic, _policy(EDITORS)),
        lambda: _test(ps, topic, ["pubsub.topics.get"]),
    ]
    for call in calls:
        if ps.kind == "google":
            with pytest.raises(exceptions.MethodNotImplemented):
                call()
        else:
            call()


@pytest.mark.parametrize(
    "resource",
    ["", "garbage", "projects/p/topics/ab", "projects/p/subscriptions/goog-sub", "projects/p"],
    ids=["empty", "garbage", "id-too-short", "goog-prefix", "project"],
)
def test_malformed_resource_names_are_invalid(ps, resource):
    with pytest.raises(exceptions.InvalidArgument):
        _get(ps, resource)
    with pytest.raises(exceptions.InvalidArgument):
        _set(ps, resource, _policy(EDITORS))
    with pytest.raises(exceptions.InvalidArgument):
        _test(ps, resource, ["pubsub.topics.get"])


def test_snapshot_and_schema_policies(ps):
    """Real Pub/Sub keeps policies on snapshots and schemas too; Google's emulator rejects
    their names. Ours has no schemas, so a schema is never found."""
    topic = ps.topic()
    snapshot = ps.sub.create_snapshot(
        name=f"{ps.project}/snapshots/snap-a", subscription=ps.subscription("sub-a", topic)
    ).name
    schema = f"{ps.project}/schemas/schema-a"
    if ps.kind == "google":
        for resource in (snapshot, schema):
            with pytest.raises(exceptions.InvalidArgument):
                _get(ps, resource)
        return
    assert _get(ps, snapshot).etag == INITIAL_ETAG
    policy = _set(ps, snapshot, _policy(VIEWERS))
    assert _get(ps, snapshot) == policy
    assert _test(ps, snapshot, ["pubsub.snapshots.seek"]) == ["pubsub.snapshots.seek"]
    with pytest.raises(exceptions.InvalidArgument):
        _test(ps, snapshot, ["pubsub.topics.publish"])
    with pytest.raises(exceptions.NotFound):
        _get(ps, schema)
    assert _test(ps, schema, ["pubsub.schemas.get"]) == []


def test_a_new_resource_has_an_empty_policy(iam):
    topic = iam.topic()
    sub = iam.subscription("sub-a", topic)
    for resource in (topic, sub):
        policy = _get(iam, resource)
        assert (policy.etag, policy.version, list(policy.bindings)) == (INITIAL_ETAG, 0, [])


def test_each_resource_keeps_its_own_policy(iam):
    topic, other = iam.topic(), iam.topic("topic-other")
    sub = iam.subscription("sub-a", topic)
    on_topic = _set(iam, topic, _policy(EDITORS, VIEWERS))
    on_sub = _set(iam, sub, _policy(VIEWERS))
    assert _bindings(on_topic) == sorted([EDITORS, VIEWERS])
    assert _get(iam, topic) == on_topic
    assert _get(iam, sub) == on_sub
    assert _bindings(_get(iam, sub)) == [VIEWERS]
    assert _get(iam, other).etag == INITIAL_ETAG


def test_set_policy_is_version_1_with_a_new_etag_each_time(iam):
    topic = iam.topic()
    first = _set(iam, topic, _policy(EDITORS))
    second = _set(iam, topic, _policy(EDITORS))
    assert (first.version, second.version) == (1, 1)
    assert len({INITIAL_ETAG, first.etag, second.etag}) == 3
    assert _get(iam, topic).etag == second.etag


def test_a_stale_etag_is_aborted_and_changes_nothing(iam):
    topic = iam.topic()
    first = _set(iam, topic, _policy(EDITORS, etag=INITIAL_ETAG))
    for stale in (INITIAL_ETAG, b"not-an-etag"):
        with pytest.raises(exceptions.Aborted):
            _set(iam, topic, _policy(VIEWERS, etag=stale))
    assert _get(iam, topic) == first
    # The current etag passes; no etag at all overwrites unconditionally.
    second = _set(iam, topic, _policy(VIEWERS, etag=first.etag))
    assert _bindings(second) == [VIEWERS]
    assert _bindings(_set(iam, topic, _policy(EDITORS))) == [EDITORS]


def test_missing_resources(iam):
    """Get and Set answer NOT_FOUND; TestIamPermissions answers no permissions (API reference)."""
    for resource in (iam.topic_path("missing"), iam.sub_path("missing")):
        with pytest.raises(exceptions.NotFound):
            _get(iam, resource)
        with pytest.raises(exceptions.NotFound):
            _set(iam, resource, _policy(EDITORS))
    assert _test(iam, iam.topic_path("missing"), ["pubsub.topics.get"]) == []
    assert _test(iam, iam.sub_path("missing"), ["pubsub.subscriptions.get"]) == []


def test_a_policy_is_deleted_with_its_resource(iam):
    topic = iam.topic()
    sub = iam.subscription("sub-a", topic)
    _set(iam, topic, _policy(EDITORS))
    sub_policy = _set(iam, sub, _policy(VIEWERS))
    iam.pub.delete_topic(topic=topic)
    with pytest.raises(exceptions.NotFound):
        _get(iam, topic)
    # The detached subscription keeps its own policy.
    assert _get(iam, sub) == sub_policy
    iam.topic()
    assert _get(iam, topic).etag == INITIAL_ETAG
    iam.sub.delete_subscription(subscription=sub)
    iam.subscription("sub-a", topic)
    assert _get(iam, sub).etag == INITIAL_ETAG
    snapshot = f"{iam.project}/snapshots/snap-a"
    iam.sub.create_snapshot(name=snapshot, subscription=sub)
    _set(iam, snapshot, _policy(EDITORS))
    iam.sub.delete_snapshot(snapshot=snapshot)
    with pytest.raises(exceptions.NotFound):
        _get(iam, snapshot)
    iam.sub.create_snapshot(name=snapshot, subscription=sub)
    assert _get(iam, snapshot).etag == INITIAL_ETAG


def test_policy_versions(iam):
    """Versions 0, 1 and 3 are valid; Pub/Sub takes no conditions, so it stores version 1."""
    topic = iam.topic()
    for version in (0, 1, 3):
        assert _set(iam, topic, _policy(EDITORS, version=version)).version == 1
        assert _get(iam, topic, requested_policy_version=version).version == 1
    for version in (-1, 2, 4):
        with pytest.raises(exceptions.InvalidArgument):
            _set(iam, topic, _policy(EDITORS, version=version))
        with pytest.raises(exceptions.InvalidArgument):
            _get(iam, topic, requested_policy_version=version)
    conditional = _policy(version=3)
    conditional.bindings.add(
        role="roles/pubsub.viewer",
        members=["user:a@example.com"],
        condition={"title": "until 2030", "expression": "request.time < timestamp('2030-01-01')"},
    )
    with pytest.raises(exceptions.InvalidArgument):
        _set(iam, topic, conditional)
    assert _bindings(_get(iam, topic)) == [EDITORS]


def test_update_mask(iam):
    """Without a mask bindings and etag are set; with one, only the fields it names."""
    topic = iam.topic()
    first = _set(iam, topic, _policy(EDITORS))
    only_etag = _set(iam, topic, _policy(VIEWERS, etag=first.etag), mask=["etag"])
    assert _bindings(only_etag) == [EDITORS]
    assert only_etag.etag != first.etag
    assert _bindings(_set(iam, topic, _policy(VIEWERS), mask=["bindings"])) == [VIEWERS]
    with pytest.raises(exceptions.Aborted):
        _set(iam, topic, _policy(EDITORS, etag=first.etag), mask=["bindings"])
    with pytest.raises(exceptions.InvalidArgument):
        _set(iam, topic, _policy(EDITORS), mask=["bogus"])
    audited = _policy()
    audited.audit_configs.add(service="allServices")
    with pytest.raises(exceptions.InvalidArgument):
        _set(iam, topic, audited, mask=["audit_configs"])
    # Outside the mask audit_configs are not looked at.
    assert _bindings(_set(iam, topic, audited, mask=["etag"])) == [VIEWERS]


MEMBERS = [
    "user:ada@example.com",
    "serviceAccount:worker@proj-1.iam.gserviceaccount.com",
    "group:ops@example.com",
    "domain:example.com",
    "allUsers",
    "allAuthenticatedUsers",
    "deleted:user:old@example.com?uid=123456789",
    "principal://iam.googleapis.com/locations/global/workforcePools/pool/subject/ada",
]


def test_bindings_are_checked(iam):
    topic = iam.topic()
    roles = ["roles/pubsub.publisher", "roles/viewer", "projects/proj-1/roles/custom.role"]
    accepted = _set(iam, topic, _policy(*[(role, MEMBERS) for role in roles]))
    assert _bindings(accepted) == sorted((role, MEMBERS) for role in roles)
    # A binding without members is dropped, as IAM stores none.
    assert _bindings(_set(iam, topic, _policy(EDITORS, ("roles/pubsub.viewer", [])))) == [EDITORS]
    for bad in [("", ["user:a@example.com"]), ("pubsub.editor", ["user:a@example.com"])]:
        with pytest.raises(exceptions.InvalidArgument):
            _set(iam, topic, _policy(bad))
    for member in ["nobody", "user:", "user:not-an-email", "robot:a@example.com"]:
        with pytest.raises(exceptions.InvalidArgument):
            _set(iam, topic, _policy(("roles/pubsub.viewer", [member])))
    assert _bindings(_get(iam, topic)) == [EDITORS]


def test_every_valid_permission_is_held(iam):
    """The emulator enforces no IAM, so TestIamPermissions grants whatever may be asked."""
    topic = iam.topic()
    sub = iam.subscription("sub-a", topic)
    on_topic = ["pubsub.topics.publish", "pubsub.topics.get", "pubsub.topics.setIamPolicy"]
    on_sub = ["pubsub.subscriptions.consume", "pubsub.subscriptions.update"]
    assert _test(iam, topic, on_topic) == on_topic
    assert _test(iam, sub, on_sub) == on_sub
    assert _test(iam, topic, []) == []


@pytest.mark.parametrize(
    "permission",
    ["*", "pubsub.*", "pubsub.topics.*", "nonsense", "pubsub.topics.fly", "storage.objects.get"]
    + ["pubsub.topics.create", "pubsub.subscriptions.consume"],
)
def test_permissions_that_cannot_be_tested_on_a_topic_are_invalid(iam, permission):
    """Wildcards, unknown permissions, and those of other resource types or of the project."""
    topic = iam.topic()
    with pytest.raises(exceptions.InvalidArgument):
        _test(iam, topic, ["pubsub.topics.get", permission])
