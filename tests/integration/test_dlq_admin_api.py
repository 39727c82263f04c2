"""The admin API browses, replays and purges dead letters behind ADMIN_API_KEYS."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest

from task_api import close_app, create_app
from tests.integration.dlq_helpers import (
    audit_records,
    dlq_task_ids,
    objects,
    seed_dead_letters,
)
from tests.integration.helpers import pull_all

pytestmark = pytest.mark.integration

ADMIN_KEY = "admin-key-for-tests"
SUBMIT_KEY = "submit-key-for-tests"


@pytest.fixture
def make_app():
    """create_app for a test; every app made is closed (publisher, status writer) afterwards."""
    apps = []

    def make(settings):
        apps.append(create_app(settings))
        return apps[-1]

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def admin(pipeline, make_app):
    """A test client of the API with admin (and submit) keys configured."""
    settings = pipeline.replace(
        admin_api_keys=frozenset({ADMIN_KEY}), api_keys=frozenset({SUBMIT_KEY})
    )
    client = make_app(settings).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_KEY}"
    return client


def test_admin_routes_are_hidden_without_admin_keys_and_refuse_other_keys(pipeline, make_app):
    closed = make_app(pipeline).test_client()
    assert closed.get("/admin/dlq").status_code == 404
    assert closed.get("/admin").status_code == 404
    anonymous = make_app(pipeline.replace(admin_api_keys=frozenset({ADMIN_KEY}))).test_client()
    assert anonymous.get("/admin/dlq").status_code == 401
    assert anonymous.post("/admin/dlq/replay", json={"all": True}).status_code == 401
    submit = {"Authorization": f"Bearer {SUBMIT_KEY}"}
    assert anonymous.get("/admin/tasks", headers=submit).status_code == 401
    assert anonymous.get("/admin").status_code == 401  # the login form


def test_list_filters_and_leaves_the_dlq_untouched(admin, pipeline):
    files = seed_dead_letters(
        pipeline,
        2,
        task_type="file_processing",
        fields={},
        error_type="missing_input",
        error_message="uploads/sample.txt does not exist",
    )
    data = seed_dead_letters(pipeline, 3)

    everything = admin.get("/admin/dlq").get_json()
    only_files = admin.get("/admin/dlq?task_type=file_processing").get_json()
    by_error = admin.get("/admin/dlq?error=BACKEND&limit=2").get_json()

    assert everything["in_dlq"] == 5 and everything["matched"] == 5
    assert sorted(d["task_id"] for d in only_files["dead_letters"]) == sorted(files)
    assert by_error["matched"] == 3 and len(by_error["dead_letters"]) == 2
    assert dlq_task_ids(pipeline) == Counter(files + data)
    bad = admin.get("/admin/dlq?since=whenever")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_filter"


def test_show_returns_the_message_in_full(admin, pipeline):
    (task_id,) = seed_dead_letters(pipeline, 1)

    shown = admin.get(f"/admin/dlq/{task_id}").get_json()["dead_letters"][0]

    assert shown["attributes"]["error_message"] == "backend said no"
    assert shown["body"]["payload"] == {"dataset_size": 5}
    assert admin.get("/admin/dlq/nope").status_code == 404


def test_replay_dry_run_then_replay_with_set_and_audit_by_key_id(admin, pipeline):
    seeded = seed_dead_letters(pipeline, 4)

    dry = admin.post("/admin/dlq/replay", json={"all": True, "dry_run": True, "set": {"a": 1}})
    preview = admin.post(
        "/admin/dlq/replay",
        json={"task_ids": seeded[:2], "dry_run": True, "set": {"dataset_size": 9}},
    ).get_json()
    done = admin.post(
        "/admin/dlq/replay",
        json={"task_ids": seeded[:2], "set": {"dataset_size": 9}, "rate": "50/s"},
    ).get_json()

    assert dry.status_code == 422 and dry.get_json()["error"]["code"] == "invalid_patch"
    assert preview["selected"] == 2 and preview["done"] == 0
    assert {p["body"]["payload"]["dataset_size"] for p in preview["preview"]} == {9}
    assert done["ok"] and done["done"] == 2 and done["left_in_dlq"] == 0
    replayed = pull_all(pipeline, pipeline.subscription_path)
    assert sorted(m.message.attributes["replay_of"] for m in replayed) == sorted(seeded[:2])
    assert sorted(m.message.attributes["task_id"] for m in replayed) == sorted(
        done["new_tasks"].values()
    )
    assert dlq_task_ids(pipeline) == Counter(seeded[2:])
    (audit,) = audit_records(pipeline)
    expected_id = "key:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()[:12]
    assert audit["actor"] == {"kind": "api_key", "id": expected_id}
    assert ADMIN_KEY not in str(audit)
    assert audit["options"] == {"rate": 50.0, "sets": {"dataset_size": 9}}


def test_replay_refuses_without_a_selection_or_when_too_slow(admin, pipeline):
    seed_dead_letters(pipeline, 3)

    empty = admin.post("/admin/dlq/replay", json={})
    slow = admin.post("/admin/dlq/replay", json={"all": True, "rate": "1/m"})

    assert empty.status_code == 400 and empty.get_json()["error"]["code"] == "no_selection"
    assert slow.status_code == 400 and slow.get_json()["error"]["code"] == "replay_too_long"
    assert sum(dlq_task_ids(pipeline).values()) == 3
    assert objects(pipeline, "audit/") == {}


def test_purge_archives_then_removes_the_selection(admin, pipeline):
    doomed = seed_dead_letters(pipeline, 2, error_type="missing_input", error_message="gone")
    kept = seed_dead_letters(pipeline, 1)
    message_ids = [
        d["message_id"]
        for d in admin.get("/admin/dlq?error=missing_input").get_json()["dead_letters"]
    ]

    result = admin.post("/admin/dlq/purge", json={"message_ids": message_ids, "archive": True})

    body = result.get_json()
    assert result.status_code == 200 and body["done"] == 2
    assert re.fullmatch(
        rf"gs://{pipeline.bucket_name}/dlq-archive/\d{{8}}T.*\.jsonl", body["archive"]
    )
    assert dlq_task_ids(pipeline) == Counter(kept)
    (archive,) = objects(pipeline, "dlq-archive/").values()
    lines = [json.loads(line) for line in archive.decode().splitlines()]
    assert sorted(line["task_id"] for line in lines) == sorted(doomed)
    assert sorted(line["message_id"] for line in lines) == sorted(message_ids)


def test_dashboard_session_is_an_httponly_strict_cookie_plus_a_csrf_header(pipeline, make_app):
    browser = make_app(pipeline.replace(admin_api_keys=frozenset({ADMIN_KEY}))).test_client()

    wrong = browser.post("/admin/login", data={"key": "not-it"})
    signed_in = browser.post("/admin/login", data={"key": ADMIN_KEY})
    page = browser.get("/admin")
    csrf = re.search(r'name="admin-csrf" content="([0-9a-f]+)"', page.get_data(as_text=True))

    assert wrong.status_code == 401 and "not valid" in wrong.get_data(as_text=True)
    assert signed_in.status_code == 303 and signed_in.headers["Location"].endswith("/admin")
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert ADMIN_KEY not in cookie
    assert page.status_code == 200 and csrf
    assert "script-src 'nonce-" in page.headers["Content-Security-Policy"]
    assert browser.get("/admin/tasks").status_code == 401, "the cookie alone is not enough"
    with_csrf = browser.get("/admin/tasks", headers={"X-Admin-CSRF": csrf.group(1)})
    assert with_csrf.status_code == 200
    browser.post("/admin/logout")
    assert browser.get("/admin/tasks", headers={"X-Admin-CSRF": csrf.group(1)}).status_code == 401
