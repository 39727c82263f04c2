"""Small errors a hostile client found: wrong status codes, a 500, lax flags, missing headers.

- A batch whose every item was rejected answered 207 (a 2xx: "accepted" to many clients);
  now 400 `nothing_queued`, with the per-item results as details.
- `/admin/dlq?since=99999999999d` overflowed datetime: 500; now 400.
- Purge's `all` took any truthy value ("yes", 1, [0]); now only JSON true. Unknown fields
  in replay/purge bodies were ignored, so `{"all": true, "dryrun": true}` replayed for real;
  now 400. A rate of NaN or Infinity is 400.
- Too many form parts was reported as "file too large"; now each limit names itself.
- JSON answers lacked `X-Content-Type-Options: nosniff`; every answer has it now.
"""

from __future__ import annotations

import pytest

from taskcore.dlq.letters import parse_since
from tests.attack.conftest import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def test_a_batch_with_every_item_rejected_is_400_saying_nothing_was_queued(open_client, publisher):
    response = open_client.post(
        "/submit-tasks",
        json={"tasks": [{"task_type": "nope"}, {"task_type": "file_processing", "x": 1}]},
    )

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "nothing_queued"
    assert [item["status"] for item in error["details"]] == ["rejected", "rejected"]
    assert publisher.envelopes == []


@pytest.mark.parametrize("since", ["99999999999d", "9" * 40 + "w", "0001-01-01T00:00:00+05:00"])
def test_a_since_beyond_the_calendar_is_400(open_client, since):
    response = open_client.get("/admin/dlq", query_string={"since": since}, headers=ADMIN)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_filter"


def test_parse_since_says_what_is_wrong_instead_of_overflowing():
    with pytest.raises(ValueError, match="before the year 1"):
        parse_since("99999999999d")


@pytest.mark.parametrize("everything", ["yes", "true", 1, [0], {"a": 1}])
@pytest.mark.parametrize("route", ["/admin/dlq/purge", "/admin/dlq/replay"])
def test_all_must_be_json_true(open_client, route, everything):
    response = open_client.post(route, json={"all": everything}, headers=ADMIN)

    assert response.status_code == 400
    assert "JSON boolean" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("route", ["/admin/dlq/purge", "/admin/dlq/replay"])
def test_a_misspelt_field_is_refused_not_ignored(open_client, route):
    response = open_client.post(route, json={"all": True, "dryrun": True}, headers=ADMIN)

    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["field"] == "dryrun"


@pytest.mark.parametrize("rate", ["nan/s", "inf", "Infinity/m", True])
def test_a_replay_rate_must_be_a_finite_number(open_client, rate):
    response = open_client.post(
        "/admin/dlq/replay", json={"all": True, "dry_run": True, "rate": rate}, headers=ADMIN
    )

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_rate"


def test_get_on_the_replay_route_is_405_not_a_task_named_replay(open_client):
    response = open_client.get("/admin/dlq/replay", headers=ADMIN)

    assert response.status_code == 405
    assert "GET" not in response.headers["Allow"]


@pytest.mark.parametrize("query", ["limit=", "status="])
def test_admin_task_listing_refuses_empty_parameters(open_client, query):
    assert open_client.get(f"/admin/tasks?{query}", headers=ADMIN).status_code == 400


def multipart(parts: list[tuple[str, str, bytes]]) -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--b\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + b"--b--\r\n"


def post_form(client, body: bytes):
    return client.post(
        "/uploads",
        data=body,
        content_type="multipart/form-data; boundary=b",
        headers={"X-Requested-With": "test"},
    )


def test_too_many_form_parts_is_reported_as_such(open_client):
    from task_api.routes.uploads import MAX_FORM_PARTS

    parts = [("file", "a.txt", b"x")] + [(f"f{i}", "", b"y") for i in range(MAX_FORM_PARTS)]
    assert len(parts) > MAX_FORM_PARTS

    response = post_form(open_client, multipart(parts))

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "too_many_form_parts" and "file" not in error["message"].split()[0]


def test_an_oversized_text_field_is_reported_as_such(open_client, make_app):
    parts = [("file", "a.txt", b"x"), ("name", "", b"n" * 600_000)]

    response = post_form(open_client, multipart(parts))
    # A file over the limit is still what it was: upload_too_large.
    small_limit = make_app(max_upload_bytes=1000).test_client()
    too_big = post_form(small_limit, multipart([("file", "a.txt", b"x" * 200_000)]))

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "form_field_too_large"
    assert too_big.status_code == 413
    assert too_big.get_json()["error"]["code"] == "upload_too_large"


@pytest.mark.parametrize(
    "method, route, kwargs",
    [
        ("get", "/health", {}),
        ("get", "/openapi.json", {}),
        ("get", "/docs", {}),
        ("post", "/submit-task", {"json": {"task_type": "file_processing"}}),
        ("post", "/submit-task", {"json": {"task_type": "nope"}}),
        ("get", "/no-such-route", {}),
        ("delete", "/submit-task", {}),
        ("get", "/admin", {}),
        ("get", "/admin/tasks", {}),
    ],
)
def test_every_answer_says_nosniff(open_client, method, route, kwargs):
    response = getattr(open_client, method)(route, **kwargs)

    assert response.headers["X-Content-Type-Options"] == "nosniff", response.status_code
