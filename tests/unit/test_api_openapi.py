"""The OpenAPI document describes every route.

Whether the API keeps the document's promises is checked by schemathesis, over every route
with submit and admin keys set, in tests/attack/test_schemathesis.py.
"""

from __future__ import annotations

import json
import re

import pytest

from task_api import create_app
from taskcore.settings import Settings
from tests.registries import builtin_registry
from tests.unit.api_fakes import FakePublisher, FakeStorage

API_KEY = "document-key"
ADMIN_KEY = "document-admin-key"
# The dashboard's pages answer people in HTML, refusals included.
HTML_PAGES = {
    ("/admin", "get"),
    ("/admin/task/{task_id}", "get"),
    ("/admin/login", "post"),
    ("/admin/sign-in", "get"),
}


def make_app(**overrides):
    overrides = {"api_keys": API_KEY, "admin_api_keys": ADMIN_KEY, **overrides}
    return create_app(
        Settings.from_env({}, bucket_name="unit-bucket", **overrides),
        publisher=FakePublisher(),
        storage=FakeStorage(),
    )


@pytest.fixture(scope="module")
def document() -> dict:
    return make_app().test_client().get("/openapi.json").get_json()


def test_every_route_of_the_app_is_documented(document):
    app = make_app()
    routes = {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented


def test_admin_routes_are_documented_only_while_admin_keys_are_set():
    without = make_app(admin_api_keys="").test_client().get("/openapi.json").get_json()
    assert not [path for path in without["paths"] if path.startswith("/admin")]


def test_submit_bodies_are_one_of_the_registered_types_by_task_type(document):
    schemas = document["components"]["schemas"]
    request = schemas["SubmitTaskRequest"]
    names = builtin_registry().names()

    assert request["discriminator"]["propertyName"] == "task_type"
    assert sorted(request["discriminator"]["mapping"]) == names
    for name, ref in request["discriminator"]["mapping"].items():
        model = schemas[ref.rsplit("/", 1)[1]]
        assert model["properties"]["task_type"]["const"] == name
        assert model["additionalProperties"] is False
    assert "filename" in schemas["FileProcessingTask"]["properties"]


def test_guarded_routes_declare_both_key_schemes_and_open_ones_none(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    assert document["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    for path in ("/health", "/ready", "/task-types", "/openapi.json", "/docs"):
        assert document["paths"][path]["get"]["security"] == []


def test_keys_are_optional_in_the_document_while_api_keys_is_empty():
    app = create_app(
        Settings.from_env({}, bucket_name="b"), publisher=FakePublisher(), storage=FakeStorage()
    )
    document = app.test_client().get("/openapi.json").get_json()
    assert {} in document["security"]


def test_every_error_answer_is_documented_with_the_error_schema(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and (path, method) in HTML_PAGES:
                    # 403 (cross-site) and 503 come before the page is rendered: JSON.
                    assert set(response["content"]) == {"text/html"} or status in ("403", "503")
                elif status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, method)


def test_docs_page_is_self_contained_and_lists_every_operation(document):
    page = make_app().test_client().get("/docs")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for path in document["paths"]:
        assert f">{path}<" in html, path
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    # Nothing loaded from elsewhere: no script, stylesheet or image from another origin.
    assert "<script" not in html
    assert 'src="http' not in html and 'href="http' not in html


def test_the_document_is_plain_json():
    text = make_app().test_client().get("/openapi.json").get_data(as_text=True)
    assert json.loads(text)["openapi"] == "3.1.0"
