"""The attack suite: each module reproduces one theme of a hostile client's attacks.

Unit-level attacks use the API on in-memory fakes (the `app`/`client` fixtures below);
those that need the real server, the emulators or `taskctl` say so in their module.
"""

from __future__ import annotations

import pytest

from task_api import create_app
from taskcore.settings import Settings
from tests.unit.conftest import publisher, storage

__all__ = ["publisher", "storage"]  # the unit tests' fakes, as fixtures here too

SUBMIT_KEY = "attack-submit-key"
ADMIN_KEY = "attack-admin-key"


@pytest.fixture
def make_app(publisher, storage):
    """create_app on the shared fakes with these settings; every app is closed afterwards."""
    apps = []

    def make(**settings):
        apps.append(
            create_app(
                Settings.from_env({}, bucket_name="unit-bucket", **settings),
                publisher=publisher,
                storage=storage,
            )
        )
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["task_api"].close()


@pytest.fixture
def open_client(make_app):
    """The API as `make run` serves it: no submit keys, an admin key."""
    return make_app(admin_api_keys=ADMIN_KEY).test_client()


@pytest.fixture
def keyed_client(make_app):
    """The API as production serves it: submit and admin keys."""
    return make_app(api_keys=SUBMIT_KEY, admin_api_keys=ADMIN_KEY).test_client()
