"""The OpenAPI document describes every route, and the API keeps every promise it makes.

The property-based part (schemathesis) generates requests from /openapi.json, valid and
invalid, and checks that no answer is a 5xx and that every answer matches the document:
status code, content type, headers and body schema.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from task_api import create_app
from taskcore.settings import Settings
from tests.registries import builtin_registry
from tests.unit.api_fakes import FakePublisher, FakeStorage

API_KEY = "schemathesis-key"


def make_app(**overrides):
    return create_app(
        Settings.from_env({}, bucket_name="unit-bucket", api_keys=API_KEY, **overrides),
        publisher=FakePublisher(),
        storage=FakeStorage(),
    )


@pytest.fixture(scope="module")
def document() -> dict:
    return make_app().test_client().get("/openapi.json").get_json()


def test_every_route_of_the_app_is_documented(document):
    app = make_app()
    routes = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.rule.startswith("/admin")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented


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
                if status.startswith(("4", "5")):
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


# --- schemathesis ----------------------------------------------------------------------------

schema = schemathesis.openapi.from_wsgi("/openapi.json", make_app())


@schema.parametrize()
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_the_promises_of_its_document(case):
    # Every check but "schema-valid requests are accepted": the payload models also refuse
    # what JSON Schema cannot say (a filename with '..', a filter without a condition), and
    # a reused Idempotency-Key is refused by design.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {API_KEY}"},
        excluded_checks=[checks.positive_data_acceptance],
    )
