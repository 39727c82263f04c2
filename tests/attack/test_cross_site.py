"""A web page on another site must not be able to submit to, or upload into, an open API.

The attacks: with no API_KEYS (`make run`), any page the developer visits could make the
browser POST an empty text/plain body to /submit-file-task (202: a task queued), or send
a multipart form to /uploads. Now an empty body gets the recipe's defaults only with no
Content-Type or a JSON one; uploads need a header no HTML form can send (an API key or
X-Requested-With); and any write whose Sec-Fetch-Site says another site made it is 403.
`curl -F file=@x -H 'X-Requested-With: curl'` keeps working.
"""

from __future__ import annotations

import io

import pytest

# What an HTML form can send with an empty body (an empty multipart body was never accepted).
FORM_TYPES = ["text/plain", "application/x-www-form-urlencoded"]


@pytest.mark.parametrize("content_type", FORM_TYPES)
@pytest.mark.parametrize("route", ["/submit-file-task", "/submit-data-task"])
def test_an_empty_form_body_is_not_a_default_task(open_client, publisher, route, content_type):
    response = open_client.post(route, data=b"", content_type=content_type)

    assert response.status_code == 415
    assert publisher.envelopes == []


def upload(client, **headers):
    return client.post(
        "/uploads",
        data={"file": (io.BytesIO(b"x"), "a.txt")},
        content_type="multipart/form-data",
        headers=headers,
    )


def test_a_form_upload_without_a_non_form_header_is_403(open_client, storage):
    response = upload(open_client)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "cross_site_upload_refused"
    assert "X-Requested-With" in response.get_json()["error"]["message"]
    assert not [n for n in storage.bucket("unit-bucket").objects if n != "uploads/sample.txt"]
    # What curl and scripts send instead, none of which a form can:
    for headers in (
        {"X-Requested-With": "curl"},
        {"X-API-Key": "k"},
        {"Authorization": "Bearer k"},
    ):
        assert upload(open_client, **headers).status_code in (201, 409), headers


WRITES = {
    "/submit-task": lambda: {"json": {"task_type": "file_processing"}},
    "/submit-file-task": dict,
    "/submit-tasks": lambda: {"json": {"tasks": [{"task_type": "file_processing"}]}},
    "/uploads": lambda: {
        "data": {"file": (io.BytesIO(b"x"), "a.txt")},
        "headers": {"X-Requested-With": "x"},
    },
    "/admin/login": lambda: {"data": {"key": "k"}},
    "/admin/logout": dict,
}


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
@pytest.mark.parametrize("route", WRITES)
def test_writes_a_page_of_another_site_made_are_403(open_client, publisher, route, site):
    kwargs = WRITES[route]()
    headers = {**kwargs.pop("headers", {}), "Sec-Fetch-Site": site}

    response = open_client.post(route, headers=headers, **kwargs)

    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "cross_site_request"
    assert publisher.envelopes == []
    # The API's own pages (same-origin) and typed URLs (none) still write; reads are free.
    kwargs = WRITES[route]()
    headers = {**kwargs.pop("headers", {}), "Sec-Fetch-Site": "same-origin"}
    assert open_client.post(route, headers=headers, **kwargs).status_code != 403
    assert open_client.get("/health", headers={"Sec-Fetch-Site": site}).status_code == 200
