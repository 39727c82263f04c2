"""Schemathesis over every route, admin routes included, with submit and admin keys set.

Requests are generated from the API's own /openapi.json, valid and invalid, and every answer
must be a non-5xx that matches the document: status code, content type, headers and body
schema. The app runs on the real emulators, so the admin routes scan a real DLQ. Every
answer is counted by status; the counts are written to test-artifacts/schemathesis.json.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from task_api import close_app, create_app
from task_api.sign_in_throttle import SignInThrottle
from taskcore.bootstrap import bootstrap
from taskcore.settings import Settings
from tests.conftest import make_test_settings
from tests.unit.api_fakes import FakePublisher, FakeStorage

pytestmark = pytest.mark.integration

SUBMIT_KEY = "schemathesis-submit-key"
ADMIN_KEY = "schemathesis-admin-key"
# A DLQ scan waits for a quiet second before it ends: those routes get fewer examples.
DLQ_PATHS = r"^/admin/dlq"
EXAMPLES = 100
DLQ_EXAMPLES = 12

answers: Counter[int] = Counter()


class CountingMiddleware:
    """Counts every answer by status code on its way out."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        def counting_start(status, headers, exc_info=None):
            answers[int(status.split(" ", 1)[0])] += 1
            return start_response(status, headers, exc_info)

        return self.app(environ, counting_start)


@pytest.fixture(scope="module")
def fuzzed_app(pubsub_emulator, gcs_emulator, artifacts_dir):
    """The API with both kinds of keys on bootstrapped emulator resources, for this module."""
    configured = make_test_settings(
        api_keys=SUBMIT_KEY, admin_api_keys=ADMIN_KEY, queued_status_records=False
    )
    bootstrap(configured)
    app = create_app(configured)
    # Schemathesis sends wrong keys on purpose (to check they are refused); the sign-in
    # throttle would soon answer 429 to everything. The throttle has its own attacks.
    app.extensions["task_api"].sign_in_throttle = SignInThrottle(per_client=10**9, overall=10**9)
    app.wsgi_app = CountingMiddleware(app.wsgi_app)
    yield app
    close_app(app)
    report = {
        "requests": sum(answers.values()),
        "server_errors": sum(n for status, n in answers.items() if status >= 500),
        "by_status": dict(sorted(answers.items())),
    }
    (artifacts_dir / "schemathesis.json").write_text(json.dumps(report, indent=2))


class SwappableApp:
    """The WSGI app schemathesis calls: the document at import time, the real app in tests.

    (schemathesis.pytest.from_fixture does not work with this pytest, and the real app needs
    the emulators, which only exist once fixtures run.)
    """

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def _document_only_app():
    # The same keys as the fuzzed app, so the same document; its clients are never used.
    return create_app(
        Settings.from_env({}, api_keys=SUBMIT_KEY, admin_api_keys=ADMIN_KEY),
        publisher=FakePublisher(),
        storage=FakeStorage(),
    )


target = SwappableApp(_document_only_app())
schema = schemathesis.openapi.from_wsgi("/openapi.json", target)


@pytest.fixture(autouse=True)
def _serve_the_real_app(fuzzed_app, monkeypatch):
    monkeypatch.setattr(target, "app", fuzzed_app)


def _call(case) -> None:
    key = ADMIN_KEY if case.path.startswith("/admin") else SUBMIT_KEY
    # Every check but "schema-valid requests are accepted": the payload models also refuse
    # what JSON Schema cannot say (a filename with '..', a filter without a condition), and
    # a reused Idempotency-Key is refused by design.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {key}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )


@schema.exclude(path_regex=DLQ_PATHS).parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_every_route_keeps_the_promises_of_the_document(case):
    _call(case)


@schema.include(path_regex=DLQ_PATHS).parametrize()
@settings(
    max_examples=DLQ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_dlq_routes_keep_the_promises_of_the_document(case):
    _call(case)
