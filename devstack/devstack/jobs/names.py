"""Resource names as Cloud Run spells them, checked on the way in and minted on the way out."""

from __future__ import annotations

import re
import secrets
import string
import uuid

from devstack.jobs.wire import invalid

# Project ids, numbers and locations; never "." or "..": names also name log directories.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._:-]*"
_LOCATION = re.compile(rf"^projects/({_SEGMENT})/locations/({_SEGMENT})$")
# ListExecutions takes "-" for "every job".
_JOB = re.compile(rf"^(projects/{_SEGMENT}/locations/{_SEGMENT})/jobs/({_SEGMENT}|-)$")
_EXECUTION = re.compile(
    rf"^(projects/{_SEGMENT}/locations/{_SEGMENT}/jobs/{_SEGMENT})/executions/({_SEGMENT})$"
)
_OPERATION = re.compile(rf"^(projects/{_SEGMENT}/locations/{_SEGMENT})/operations/({_SEGMENT})$")
# Cloud Run's rule for job names: a DNS label of at most 63 characters.
_JOB_ID = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Cloud Run names an execution after its job plus five random characters ("my-job-x7k2p").
_EXECUTION_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
ANY_JOB = "-"


def _match(pattern: re.Pattern, name: str, what: str, shape: str) -> re.Match:
    found = pattern.match(name or "")
    if found is None:
        raise invalid(f"invalid {what} name {name!r}: expected {shape}")
    return found


def location(name: str) -> str:
    """A checked parent name projects/{project}/locations/{location}."""
    _match(_LOCATION, name, "parent", "projects/{project}/locations/{location}")
    return name


def job(name: str) -> tuple[str, str]:
    """(parent, job id) of a checked job name."""
    found = _match(_JOB, name, "job", "projects/{project}/locations/{location}/jobs/{job}")
    return found.group(1), found.group(2)


def execution(name: str) -> tuple[str, str]:
    """(job name, execution id) of a checked execution name."""
    found = _match(
        _EXECUTION,
        name,
        "execution",
        "projects/{project}/locations/{location}/jobs/{job}/executions/{execution}",
    )
    return found.group(1), found.group(2)


def operation(name: str) -> str:
    """A checked operation name."""
    _match(_OPERATION, name, "operation", "projects/{project}/locations/{location}/operations/{id}")
    return name


def check_job_id(job_id: str) -> str:
    """job_id if Cloud Run accepts it as a job name."""
    if not _JOB_ID.match(job_id or ""):
        raise invalid(
            f"invalid job id {job_id!r}: use lowercase letters, digits and hyphens, start with a "
            "letter, end with a letter or digit, and keep it to 63 characters"
        )
    return job_id


def new_execution_id(job_id: str) -> str:
    """A fresh execution id for job_id, as Cloud Run forms them."""
    suffix = "".join(secrets.choice(_EXECUTION_SUFFIX_ALPHABET) for _ in range(5))
    return f"{job_id}-{suffix}"


def new_operation(parent: str) -> str:
    """A fresh operation name under projects/{project}/locations/{location}."""
    return f"{parent}/operations/{uuid.uuid4()}"
