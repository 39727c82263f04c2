"""What a failed run's exception means: errors of the task's own data are permanent."""

from __future__ import annotations

import csv
import io
import json

import pytest
import requests
from google.api_core import exceptions as gexc

from taskcore.errors import MissingInputError, PublishError, TaskTimeoutError, TransientTaskError
from taskcore.failures import Kind, classify


def raised(fn):
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


DATA_ERRORS = {
    "a huge integer": lambda: float(10**400),
    "a ragged CSV": lambda: sum(
        row["v"] for row in csv.DictReader(io.StringIO("k,v\nx,1,extra,more\n"), restkey=None)
    ),
    "deep JSON": lambda: json.loads(nest(100_000)),
    "not a number": lambda: int("twelve"),
    "a missing field": lambda: {"a": 1}["b"],
    "division by zero": lambda: 1 / 0,
    "invalid UTF-8": lambda: b"\xff".decode("utf-8"),
}


@pytest.mark.parametrize("case", sorted(DATA_ERRORS))
def test_errors_of_the_tasks_own_data_are_permanent(case):
    failure = classify(raised(DATA_ERRORS[case]))
    assert failure.kind == Kind.PERMANENT and failure.error_type == "data_error"
    assert failure.message.startswith(type(raised(DATA_ERRORS[case])).__name__)
    assert ".py:" in failure.message, "where it rose, for the operator"


def test_declared_errors_are_permanent_and_keep_their_class_name():
    class UpstreamRejected(Exception):
        pass

    failure = classify(UpstreamRejected("no"), (UpstreamRejected,))
    assert failure.permanent and failure.error_type == "UpstreamRejected"


def test_our_own_errors_keep_their_type():
    assert classify(MissingInputError("x")).error_type == "missing_input"
    assert classify(MissingInputError("x")).permanent
    assert classify(TaskTimeoutError("x")).kind == Kind.TRANSIENT
    assert classify(TransientTaskError("x")).kind == Kind.TRANSIENT


def test_running_out_of_memory_is_resource_exhausted_and_retried():
    failure = classify(MemoryError())
    assert failure.kind == Kind.TRANSIENT and failure.error_type == "resource_exhausted"


@pytest.mark.parametrize(
    "exc",
    [
        gexc.RetryError("gave up", cause=None),
        gexc.ServiceUnavailable("down"),
        requests.ConnectionError("refused"),
        PublishError("topic unreachable"),
    ],
)
def test_unreachable_services_are_not_the_tasks_failure(exc):
    assert classify(exc).kind == Kind.INFRASTRUCTURE


@pytest.mark.parametrize(
    "exc", [OSError("disk"), TimeoutError("slow"), RuntimeError("upstream 502")]
)
def test_everything_else_is_transient(exc):
    assert classify(exc).kind == Kind.TRANSIENT
