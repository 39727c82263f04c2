"""JSON bodies that are valid JSON and still break things: deep nesting, non-finite numbers.

The attacks: a task nested ~300 levels deep answered 500 with a traceback in the log
(pydantic's serializer gives up), and in POST /submit-tasks one such item failed the whole
batch. NaN, Infinity and 1e999 (which Python parses to inf) were accepted and queued,
though no strict JSON consumer can read them back. Now both are a 400 naming the field;
in a batch the item is rejected and the others are judged on their own.
"""

from __future__ import annotations

import logging

import pytest

from tests.attack.conftest import ADMIN_KEY


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_task(depth: int) -> str:
    value = nested(depth)
    return f'{{"task_type": "data_transformation", "filter": {{"field": "a", "op": "eq", "value": {value}}}}}'


def post_json(client, route: str, text: str, **headers):
    return client.post(route, data=text, content_type="application/json", headers=headers)


def error_of(response) -> dict:
    return response.get_json()["error"]


@pytest.mark.parametrize("depth", [300, 5000], ids=["pydantic-breaks", "parser-breaks"])
def test_a_deeply_nested_task_is_400_not_500(open_client, publisher, caplog, depth):
    caplog.set_level(logging.ERROR)

    response = post_json(open_client, "/submit-task", deep_task(depth))

    assert response.status_code == 400, response.get_data(as_text=True)
    assert error_of(response)["code"] == "nesting_too_deep"
    assert publisher.envelopes == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback logged"


def test_one_deep_item_in_a_batch_is_rejected_and_the_others_are_queued(open_client, publisher):
    good = '{"task_type": "data_transformation", "dataset_size": 3}'
    body = f'{{"tasks": [{good}, {deep_task(300)}, {good}]}}'

    response = post_json(open_client, "/submit-tasks", body)

    assert response.status_code == 207, response.get_data(as_text=True)
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == ["queued", "rejected", "queued"]
    assert results[1]["error"]["code"] == "nesting_too_deep"
    assert results[1]["error"]["details"][0]["field"] == "filter"
    assert len(publisher.envelopes) == 2


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]


@pytest.mark.parametrize("number", NON_FINITE)
def test_a_non_finite_number_is_400_naming_the_field(open_client, publisher, number):
    body = f'{{"task_type": "file_processing", "processing_time": {number}}}'

    response = post_json(open_client, "/submit-task", body)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "non_finite_number"
    assert error["details"] == [
        {
            "field": "processing_time",
            "message": "must be a finite number",
            "type": "non_finite_number",
        }
    ]
    assert publisher.envelopes == []


@pytest.mark.parametrize("route", ["/submit-file-task", "/submit-data-task"])
def test_the_recipe_routes_refuse_non_finite_numbers_too(open_client, publisher, route):
    response = post_json(open_client, route, '{"processing_time": NaN, "dataset_size": 1}')

    assert response.status_code == 400 and error_of(response)["code"] == "non_finite_number"
    assert publisher.envelopes == []


def test_a_non_finite_number_deep_in_records_names_its_path(open_client, publisher):
    body = '{"task_type": "data_transformation", "records": [{"a": 1}, {"a": Infinity}]}'

    response = post_json(open_client, "/submit-task", body)

    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "records.1.a"
    assert publisher.envelopes == []


def test_a_non_finite_item_in_a_batch_is_rejected_alone(open_client, publisher):
    body = (
        '{"tasks": [{"task_type": "data_transformation", "records": [{"a": 1e999}]},'
        ' {"task_type": "data_transformation", "records": [{"a": 1}]}]}'
    )

    response = post_json(open_client, "/submit-tasks", body)

    results = response.get_json()["results"]
    assert [r["status"] for r in results] == ["rejected", "queued"]
    assert results[0]["error"]["details"][0]["field"] == "records.0.a"
    assert len(publisher.envelopes) == 1


def test_an_admin_replay_patch_of_nan_is_400(make_app):
    client = make_app(admin_api_keys=ADMIN_KEY).test_client()

    response = post_json(
        client,
        "/admin/dlq/replay",
        '{"all": true, "dry_run": true, "set": {"processing_time": NaN}}',
        Authorization=f"Bearer {ADMIN_KEY}",
    )

    assert response.status_code == 400
    assert error_of(response)["details"][0]["field"] == "set.processing_time"
