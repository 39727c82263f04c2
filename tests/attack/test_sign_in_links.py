"""The admin key never travels in a URL: one-time sign-in links instead of /admin?key=.

The attack: `make run`'s banner printed `/admin?key=<the admin key>`, which lands in the
terminal's scrollback, shell logs, browser history and any request log. Now the banner
holds a one-time link (a code good for one sign-in, for CODE_SECONDS) that the stack asks
the API for with the key in a header; a generated key is kept in a file only its owner can
read; and /admin refuses a key in its query string.
"""

from __future__ import annotations

import stat
from urllib.parse import urlsplit

import pytest

from devstack import stack
from task_api.admin_sessions import CODE_PREFIX, CODE_SECONDS
from task_api.sign_in_throttle import CLIENT_FAILURES
from taskcore.settings import Settings
from tests.attack.conftest import ADMIN_KEY
from tests.attack.test_admin_sign_in import COOKIE, Clock
from tests.integration.served_app import served
from tests.unit.api_fakes import bucket_of

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def new_link(client) -> dict:
    answer = client.post("/admin/sign-in-links", headers=ADMIN)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()


def test_a_key_in_the_query_string_signs_nobody_in(open_client):
    response = open_client.get(f"/admin?key={ADMIN_KEY}")

    assert response.status_code == 400
    assert "form" in response.get_data(as_text=True)
    assert open_client.get_cookie(COOKIE, path="/admin") is None


def test_a_sign_in_link_works_once_and_never_carries_the_key(open_client, make_app):
    link = new_link(open_client)
    browser, second = (
        open_client.application.test_client(),
        make_app(admin_api_keys=ADMIN_KEY).test_client(),
    )

    first_use = browser.get(link["path"])
    again = second.get(link["path"])  # another instance, same bucket: already used

    assert ADMIN_KEY not in link["url"]
    assert first_use.status_code == 303 and first_use.headers["Location"].endswith("/admin")
    assert browser.get_cookie(COOKIE, path="/admin") is not None
    assert again.status_code == 401 and "not valid" in again.get_data(as_text=True)
    assert second.get_cookie(COOKIE, path="/admin") is None


def test_a_sign_in_link_expires(open_client, storage):
    clock = Clock()
    open_client.application.extensions["task_api"].admin_sessions.clock = clock
    link = new_link(open_client)

    clock.now += CODE_SECONDS + 1

    assert open_client.get(link["path"]).status_code == 401
    assert not [n for n in bucket_of(storage).objects if n.startswith(CODE_PREFIX)], "used up"


def test_guessed_codes_are_throttled_like_wrong_keys(open_client):
    link = new_link(open_client)
    guesses = [
        open_client.get(f"/admin/sign-in?code={'A' * 42}{i % 10}").status_code
        for i in range(CLIENT_FAILURES)
    ]
    real = open_client.get(link["path"])

    assert guesses == [401] * CLIENT_FAILURES
    assert real.status_code == 429 and "Retry-After" in real.headers


def test_the_make_run_banner_shows_a_one_time_link_and_never_the_key(make_app, tmp_path, capsys):
    app = make_app(admin_api_keys=ADMIN_KEY)
    key_file = stack._write_private(tmp_path / "admin-key", ADMIN_KEY)
    with served(app) as url:
        stack._banner(
            url, Settings(admin_api_keys=ADMIN_KEY), stack._sign_in_link(url, ADMIN_KEY), key_file
        )
    banner = capsys.readouterr().err
    (link,) = [word for word in banner.split() if "/admin/sign-in?code=" in word]

    assert ADMIN_KEY not in banner
    assert str(key_file) in banner and f"valid {CODE_SECONDS // 60} minutes" in banner
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    browser = app.test_client()
    path = urlsplit(link).path + "?" + urlsplit(link).query
    assert browser.get(path).status_code == 303
    assert browser.get(path).status_code == 401, "the banner's link works once"


@pytest.mark.parametrize("exists", [False, True])
def test_the_key_file_is_private_even_if_one_was_there(tmp_path, exists):
    path = tmp_path / "admin-key"
    if exists:
        path.write_text("old")
        path.chmod(0o644)

    stack._write_private(path, "k")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "k\n"
