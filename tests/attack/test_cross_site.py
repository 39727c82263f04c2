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

from tests.attack.conftest import SUBMIT_KEY

FORM_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


@pytest.mark.parametrize("content_type", FORM_TYPES)
@pytest.mark.parametrize("route", ["/submit-file-task", "/submit-data-task"])
def test_an_empty_form_body_is_not_a_default_task(open_client, publisher, route, content_type):
    response = open_client.post(route, data=b"", content_type=content_type)

    assert response.status_code == 415
    assert publisher.envelopes == []


def test_an_empty_body_without_a_content_type_still_gets_the_recipe_defaults(
    open_client, publisher
):
    assert open_client.post("/submit-file-task").status_code == 202
    assert len(publisher.envelopes) == 1


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
    assert not storage.buckets.get("unit-bucket") or not storage.bucket("unit-bucket").objects


@pytest.mark.parametrize(
    "headers",
    [{"X-Requested-With": "curl"}, {"X-API-Key": "anything"}, {"Authorization": "Bearer x"}],
    ids=["x-requested-with", "x-api-key", "bearer"],
)
def test_an_upload_with_a_header_no_form_can_send_is_stored(open_client, headers):
    assert upload(open_client, **headers).status_code == 201


def test_with_keys_on_the_key_is_the_proof(keyed_client):
    assert upload(keyed_client).status_code == 401
    assert upload(keyed_client, **{"X-API-Key": SUBMIT_KEY}).status_code == 201


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


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_the_api_s_own_pages_and_typed_urls_may_still_write(open_client, site):
    response = open_client.post(
        "/submit-task", json={"task_type": "file_processing"}, headers={"Sec-Fetch-Site": site}
    )

    assert response.status_code == 202


def test_reads_from_anywhere_are_untouched(open_client):
    assert open_client.get("/health", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
