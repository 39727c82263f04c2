"""The admin dashboard as production reaches it: through `gcloud run services proxy`.

Cloud Run IAM lets a browser in only through the proxy, which adds the user's identity token
as `Authorization: Bearer <token>` to every request it forwards (docs/deploy.md, step 9).
The dashboard signs in with the admin key once and then authenticates its page's requests
by session cookie and CSRF header; the identity token on those requests is Cloud Run's, not
an admin key, and must not be judged as one.
"""

from __future__ import annotations

import pytest

from task_api import create_app
from task_api.admin_session import COOKIE, CSRF_HEADER, csrf_token
from taskcore.settings import Settings
from tests.unit.api_fakes import FakeBucket, FakePublisher, FakeStorage

ADMIN_KEY = "admin-key-1"
# What the proxy adds: a Google-signed identity token (its shape; Cloud Run checked it).
PROXY_HEADERS = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln"}


class ListingBucket(FakeBucket):
    """The fake bucket, able to list (the dashboard's task views list the journal)."""

    def list_blobs(self, prefix: str = "", start_offset: str | None = None, **_):
        names = [n for n in sorted(self.objects) if n.startswith(prefix)]
        return [self.blob(n) for n in names if start_offset is None or n >= start_offset]


class ListingStorage(FakeStorage):
    def bucket(self, name: str) -> ListingBucket:
        return self.buckets.setdefault(name, ListingBucket(name))


@pytest.fixture
def dashboard():
    """A browser signed in to the dashboard: the test client, and its CSRF header."""
    settings = Settings.from_env({}, admin_api_keys=ADMIN_KEY, bucket_name="b")
    app = create_app(settings, publisher=FakePublisher(), storage=ListingStorage())
    client = app.test_client()
    signed_in = client.post("/admin/login", data={"key": ADMIN_KEY}, headers=PROXY_HEADERS)
    assert signed_in.status_code in (302, 303), signed_in.text
    session_id = client.get_cookie(COOKIE, path="/admin").value
    assert client.get("/admin", headers=PROXY_HEADERS).status_code == 200
    yield client, {CSRF_HEADER: csrf_token(session_id)}
    app.extensions["task_api"].close()


def test_dashboard_requests_succeed_by_session_cookie(dashboard):
    client, csrf = dashboard
    assert client.get("/admin/tasks", headers=csrf).status_code == 200


def test_dashboard_requests_succeed_behind_the_proxy(dashboard):
    client, csrf = dashboard
    response = client.get("/admin/tasks", headers={**PROXY_HEADERS, **csrf})
    assert response.status_code == 200, response.text


def test_admin_api_calls_send_the_key_beside_the_identity_token():
    settings = Settings.from_env({}, admin_api_keys=ADMIN_KEY, bucket_name="b")
    app = create_app(settings, publisher=FakePublisher(), storage=ListingStorage())
    try:
        client = app.test_client()
        headers = {**PROXY_HEADERS, "X-API-Key": ADMIN_KEY}
        assert client.get("/admin/tasks", headers=headers).status_code == 200
        assert client.get("/admin/tasks", headers=PROXY_HEADERS).status_code == 401
    finally:
        app.extensions["task_api"].close()
