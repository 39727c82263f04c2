"""Fixtures shared by the API unit tests: the app on fake clients (no network)."""

from __future__ import annotations

import pytest

from task_api import create_app
from taskcore.settings import Settings
from tests.unit.api_fakes import FakePublisher, FakeStorage, with_sample_input


@pytest.fixture
def publisher() -> FakePublisher:
    """A publisher that records what it is asked to publish."""
    return FakePublisher()


@pytest.fixture
def storage() -> FakeStorage:
    """An in-memory storage client holding the recipe's default input, uploads/sample.txt."""
    return with_sample_input(FakeStorage())


@pytest.fixture
def app(publisher, storage):
    """The API on the fakes; its background writer is stopped afterwards."""
    app = create_app(
        Settings.from_env({}, bucket_name="unit-bucket"), publisher=publisher, storage=storage
    )
    yield app
    app.extensions["task_api"].close()


@pytest.fixture
def client(app):
    """A Flask test client of the app."""
    return app.test_client()
