"""google.iam.v1.IAMPolicy on Pub/Sub resources: policies are kept, never enforced.

Real Pub/Sub keeps one policy per topic, subscription, snapshot and schema; this emulator
keeps them for the resources it has, drops each with its resource, and answers every
permission as held. Where Google's emulator answers UNIMPLEMENTED, this follows Pub/Sub's
API reference (tests/conformance/test_iam.py records the differences).
"""

from __future__ import annotations

import re
import time

import grpc
from google.iam.v1 import iam_policy_pb2, policy_pb2

from devstack.emulators.pubsub import validation as v
from devstack.emulators.pubsub.wire import ApiError, invalid, not_found

Policy = policy_pb2.Policy
GetIamPolicyRequest = iam_policy_pb2.GetIamPolicyRequest
SetIamPolicyRequest = iam_policy_pb2.SetIamPolicyRequest
TestIamPermissionsRequest = iam_policy_pb2.TestIamPermissionsRequest
TestIamPermissionsResponse = iam_policy_pb2.TestIamPermissionsResponse

# The etag IAM gives a resource whose policy was never set ("ACAB" in base64).
EMPTY_POLICY_ETAG = b"\x00\x20\x01"
# Policy format versions IAM accepts; Pub/Sub takes no conditional bindings, so what it
# stores is always version 1.
VALID_POLICY_VERSIONS = frozenset({0, 1, 3})
STORED_POLICY_VERSION = 1
# Without an update_mask SetIamPolicy replaces these (google/iam/v1/iam_policy.proto).
DEFAULT_UPDATE_MASK = ("bindings", "etag")
POLICY_FIELDS = frozenset(Policy.DESCRIPTOR.fields_by_name)

_TAG_PERMISSIONS = ("createTagBinding", "deleteTagBinding", "listEffectiveTags", "listTagBindings")
# The permissions that can be tested on each kind of resource (the project-level ones,
# such as pubsub.topics.create, are not among them).
PERMISSIONS = {
    kind: frozenset(f"pubsub.{kind}.{verb}" for verb in verbs + _TAG_PERMISSIONS)
    for kind, verbs in {
        "topics": (
            "attachSubscription",
            "delete",
            "detachSubscription",
            "get",
            "getIamPolicy",
            "publish",
            "setIamPolicy",
            "update",
            "updateTag",
        ),
        "subscriptions": (
            "consume",
            "delete",
            "get",
            "getIamPolicy",
            "setIamPolicy",
            "update",
        ),
        "snapshots": ("delete", "get", "getIamPolicy", "seek", "setIamPolicy", "update"),
        "schemas": (
            "attach",
            "commit",
            "delete",
            "get",
            "getIamPolicy",
            "listRevisions",
            "rollback",
            "setIamPolicy",
            "validate",
        ),
    }.items()
}

_ROLE_RE = re.compile(r"(?:(?:projects|organizations)/[^/]+/)?roles/[A-Za-z0-9_.]+")
_EMAIL = r"[^@\s:]+@[^@\s:]+\.[^@\s:]+"
_MEMBER_RE = re.compile(
    rf"allUsers|allAuthenticatedUsers"
    rf"|(?:user|serviceAccount|group):{_EMAIL}"
    rf"|deleted:(?:user|serviceAccount|group):{_EMAIL}\?uid=\d+"
    r"|domain:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
    r"|project(?:Owner|Editor|Viewer):[a-z][a-z0-9-]*"
    r"|principal(?:Set)?://\S+"
)
_CONCURRENT_CHANGE = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)


def _new_etag(previous: int) -> tuple[bytes, int]:
    """An etag no earlier policy had: 0x07 then microseconds, as IAM's etags look."""
    stamp = max(time.time_ns() // 1000, previous + 1)
    return b"\x07" + stamp.to_bytes(7, "big"), stamp


def check_bindings(bindings) -> list:
    """The bindings worth storing (those with members), or INVALID_ARGUMENT."""
    kept = []
    for binding in bindings:
        if not _ROLE_RE.fullmatch(binding.role):
            raise invalid(f"Role ({binding.role}) does not exist or is malformed.")
        if binding.HasField("condition"):
            # Pub/Sub is not among the resource types that accept conditional bindings.
            raise invalid(
                f"Conditions are not supported for this resource type (role={binding.role})."
            )
        for member in binding.members:
            if not _MEMBER_RE.fullmatch(member):
                raise invalid(f"Invalid member ({member}) in the policy binding.")
        # IAM keeps no binding without members.
        if binding.members:
            kept.append(binding)
    return kept


def check_permissions(kind: str, permissions) -> None:
    """INVALID_ARGUMENT unless every permission can be tested on a resource of kind."""
    for permission in permissions:
        if "*" in permission:
            raise invalid(
                f"Permissions with wildcards (such as '*' or 'pubsub.*') are not allowed "
                f"(permission={permission})."
            )
        if permission not in PERMISSIONS[kind]:
            raise invalid(f"Permission {permission} is not valid for this resource.")


class IamMixin:
    """The IAM policy RPCs of the broker; expects the attributes Broker sets up."""

    def _iam_resource_exists(self, kind: str, name: str) -> bool:
        """Whether name exists; this emulator has no schemas (lock held)."""
        collection = {
            "topics": self.topics,
            "subscriptions": self.subs,
            "snapshots": self.snapshots,
        }
        return name in collection.get(kind, ())

    def _existing_iam_resource(self, name: str) -> str:
        """The kind of the resource called name (lock held), or NOT_FOUND."""
        kind = v.iam_resource_kind(name)
        if not self._iam_resource_exists(kind, name):
            raise not_found(f"Resource not found (resource={name.rpartition('/')[2]}).")
        return kind

    def get_iam_policy(self, request: GetIamPolicyRequest) -> Policy:
        """The resource's policy; an empty one with IAM's initial etag if never set."""
        version = request.options.requested_policy_version
        if version not in VALID_POLICY_VERSIONS:
            raise invalid(f"Invalid requested policy version: {version}. Valid values: 0, 1, 3.")
        with self.lock:
            self._existing_iam_resource(request.resource)
            policy = self.policies.get(request.resource)
            return policy if policy is not None else Policy(etag=EMPTY_POLICY_ETAG)

    def set_iam_policy(self, request: SetIamPolicyRequest) -> Policy:
        """Replace the fields of the policy its update_mask names (bindings and etag if none)."""
        paths = list(request.update_mask.paths) or list(DEFAULT_UPDATE_MASK)
        for path in paths:
            if path not in POLICY_FIELDS:
                raise invalid(f"Invalid update_mask path: {path} is not a field of Policy.")
        if not request.HasField("policy"):
            raise invalid("The policy in the SetIamPolicyRequest must be set.")
        given = request.policy
        if given.version not in VALID_POLICY_VERSIONS:
            raise invalid(f"Invalid policy version: {given.version}. Valid values: 0, 1, 3.")
        bindings = check_bindings(given.bindings) if "bindings" in paths else None
        if "audit_configs" in paths and given.audit_configs:
            raise invalid("Audit configs are not supported on Pub/Sub resources.")
        with self.lock:
            self._existing_iam_resource(request.resource)
            current = self.policies.get(request.resource)
            current_etag = current.etag if current is not None else EMPTY_POLICY_ETAG
            # A caller that sends an etag wants the read-modify-write check, whatever the mask.
            if given.etag and given.etag != current_etag:
                raise ApiError(grpc.StatusCode.ABORTED, _CONCURRENT_CHANGE)
            etag, self.last_etag_stamp = _new_etag(self.last_etag_stamp)
            policy = Policy(version=STORED_POLICY_VERSION, etag=etag)
            if bindings is not None:
                policy.bindings.extend(bindings)
            elif current is not None:
                policy.bindings.extend(current.bindings)
            self.policies[request.resource] = policy
            self.dirty = True
            return policy

    def test_iam_permissions(self, request: TestIamPermissionsRequest) -> list[str]:
        """The permissions asked about, all held; none for a resource that does not exist."""
        kind = v.iam_resource_kind(request.resource)
        check_permissions(kind, request.permissions)
        with self.lock:
            if not self._iam_resource_exists(kind, request.resource):
                return []
        return list(request.permissions)
