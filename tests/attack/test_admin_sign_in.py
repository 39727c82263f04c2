"""Admin sign-in and sessions: malformed cookies, guessing, revocation, and several instances.

The attacks: a malformed session cookie (`v1.\\xb2.abc`, 4,400 digits) answered 500 on every
/admin route; 300 wrong keys took 2 s and nothing noticed; logout left the token valid;
tokens were HMACs of a timestamp, so two sign-ins in one second got the same one. Now a
cookie is 256 random bits naming a session kept in the bucket (shared by every process
and instance, cached CACHE_SECONDS), logout deletes it, wrong keys are throttled per client
and overall (429 + Retry-After) and logged, and the client is whoever the trusted proxy
says, not whatever X-Forwarded-For the client wrote.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from task_api.admin_sessions import CACHE_SECONDS, SESSION_PREFIX, SESSION_SECONDS
from task_api.sign_in_throttle import CLIENT_FAILURES, OVERALL_FAILURES, SignInThrottle
from taskcore.events import Event
from tests.attack.conftest import ADMIN_KEY, SUBMIT_KEY
from tests.integration.api_process import running_api
from tests.unit.api_fakes import bucket_of

COOKIE = "taskctl_admin"
ADMIN_JSON_ROUTES = [
    ("get", "/admin/dlq"),
    ("get", "/admin/dlq/t1"),
    ("post", "/admin/dlq/replay"),
    ("post", "/admin/dlq/purge"),
    ("get", "/admin/tasks"),
    ("get", "/admin/overview"),
    ("post", "/admin/sign-in-links"),
]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def from_address(address: str, **extra) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}, **extra}


def sign_in(client, key: str = ADMIN_KEY, address: str = "198.51.100.7", headers=None):
    return client.post(
        "/admin/login", data={"key": key}, headers=headers or {}, **from_address(address)
    )


def session_cookie(client) -> str | None:
    cookie = client.get_cookie(COOKIE, path="/admin")
    return cookie.value if cookie else None


def csrf_of(client) -> str:
    page = client.get("/admin").get_data(as_text=True)
    return re.search(r'name="admin-csrf" content="([0-9a-f]+)"', page).group(1)


def signed_in_as(client, cookie: str, csrf: str) -> bool:
    """Whether an admin route takes this session (asking for a sign-in link touches only
    the bucket, which the fakes have)."""
    client.set_cookie(COOKIE, cookie, path="/admin")
    answer = client.post("/admin/sign-in-links", headers={"X-Admin-CSRF": csrf})
    assert answer.status_code in (201, 401), answer.get_data(as_text=True)
    return answer.status_code == 201


# --- malformed cookies --------------------------------------------------------------------------

MALFORMED = ["v1.\xb2.abc", "v1." + "1" * 4400 + ".abc"]


@pytest.mark.filterwarnings("ignore:The 'taskctl_admin' cookie is too large")
@pytest.mark.parametrize("cookie", MALFORMED, ids=range(len(MALFORMED)))
@pytest.mark.parametrize("method, route", ADMIN_JSON_ROUTES)
def test_a_malformed_session_cookie_is_401_on_every_admin_route(open_client, method, route, cookie):
    open_client.set_cookie(COOKIE, cookie, path="/admin")

    response = getattr(open_client, method)(route, headers={"X-Admin-CSRF": "0" * 64})

    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "missing_api_key"


@pytest.mark.filterwarnings("ignore:The 'taskctl_admin' cookie is too large")
@pytest.mark.parametrize("cookie", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_session_cookie_gets_the_sign_in_form(open_client, cookie):
    open_client.set_cookie(COOKIE, cookie, path="/admin")

    response = open_client.get("/admin")

    assert response.status_code == 401 and "Admin key" in response.get_data(as_text=True)


@pytest.mark.parametrize("method, route", ADMIN_JSON_ROUTES)
def test_an_hmac_of_a_timestamp_is_no_longer_a_session(open_client, method, route):
    # The old token, v1.<time>.<HMAC(key, v1.<time>)>, with the CSRF header it implied.
    issued = f"v1.{int(time.time())}"
    token = f"{issued}.{hmac.new(ADMIN_KEY.encode(), issued.encode(), hashlib.sha256).hexdigest()}"
    csrf = hmac.new(ADMIN_KEY.encode(), f"csrf.{token}".encode(), hashlib.sha256).hexdigest()
    open_client.set_cookie(COOKIE, token, path="/admin")

    response = getattr(open_client, method)(route, headers={"X-Admin-CSRF": csrf})

    assert response.status_code == 401


# --- sessions -----------------------------------------------------------------------------------


def test_sessions_are_random_ids_and_the_bucket_holds_only_their_hashes(open_client, storage):
    first = sign_in(open_client)
    cookie_one = session_cookie(open_client)
    sign_in(open_client)
    cookie_two = session_cookie(open_client)

    assert first.status_code == 303
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie_one)
    assert cookie_one != cookie_two, "two sign-ins in the same second share nothing"
    stored = {
        n: d for n, (d, _, _) in bucket_of(storage).objects.items() if n.startswith(SESSION_PREFIX)
    }
    digest = hashlib.sha256(cookie_one.encode()).hexdigest()
    assert f"{SESSION_PREFIX}{digest}.json" in stored
    for data in stored.values():
        assert cookie_one.encode() not in data and ADMIN_KEY.encode() not in data


def test_logout_revokes_the_session_even_if_the_cookie_is_replayed(open_client):
    sign_in(open_client)
    cookie, csrf = session_cookie(open_client), csrf_of(open_client)
    assert signed_in_as(open_client, cookie, csrf)

    open_client.post("/admin/logout")

    assert not signed_in_as(open_client, cookie, csrf)
    assert open_client.get("/admin").status_code == 401


def test_a_session_expires_on_the_server_whatever_the_cookie_says(open_client, storage):
    app = open_client.application
    clock = Clock()
    app.extensions["task_api"].admin_sessions.clock = clock
    sign_in(open_client)
    cookie, csrf = session_cookie(open_client), csrf_of(open_client)

    clock.now += SESSION_SECONDS + 1

    assert not signed_in_as(open_client, cookie, csrf)
    assert not [n for n in bucket_of(storage).objects if n.startswith(SESSION_PREFIX)]


def test_sessions_are_shared_by_instances_and_logout_reaches_them_within_the_cache_delay(
    make_app,
):
    # Two API instances (or gunicorn workers) on one bucket.
    one = make_app(admin_api_keys=ADMIN_KEY)
    two = make_app(admin_api_keys=ADMIN_KEY)
    clock = Clock()
    for app in (one, two):
        app.extensions["task_api"].admin_sessions.clock = clock
    browser, elsewhere = one.test_client(), two.test_client()
    sign_in(browser)
    cookie, csrf = session_cookie(browser), csrf_of(browser)
    assert signed_in_as(elsewhere, cookie, csrf), "signed in everywhere"

    browser.post("/admin/logout")

    assert not signed_in_as(browser, cookie, csrf), "at once where it happened"
    assert signed_in_as(elsewhere, cookie, csrf), "cached elsewhere..."
    clock.now += CACHE_SECONDS
    assert not signed_in_as(elsewhere, cookie, csrf), "...for CACHE_SECONDS at most"


def test_removing_a_key_from_admin_api_keys_ends_its_sessions(make_app):
    browser = make_app(admin_api_keys=ADMIN_KEY).test_client()
    sign_in(browser)
    cookie, csrf = session_cookie(browser), csrf_of(browser)

    rotated = make_app(admin_api_keys="the-new-admin-key").test_client()

    assert not signed_in_as(rotated, cookie, csrf)


def test_the_session_cookie_without_its_csrf_header_is_not_enough(open_client):
    sign_in(open_client)

    assert open_client.post("/admin/sign-in-links").status_code == 401
    wrong = {"X-Admin-CSRF": "f" * 64}
    assert open_client.post("/admin/sign-in-links", headers=wrong).status_code == 401


# --- guessing -----------------------------------------------------------------------------------


@pytest.fixture
def throttled_app(make_app):
    """The API with an admin key and a throttle on a clock the test moves."""
    app = make_app(api_keys=SUBMIT_KEY, admin_api_keys=ADMIN_KEY)
    clock = Clock()
    app.extensions["task_api"].sign_in_throttle = SignInThrottle(clock=clock)
    return app, clock


def test_wrong_keys_from_one_client_are_throttled_with_retry_after(throttled_app):
    app, clock = throttled_app
    client = app.test_client()
    statuses = [sign_in(client, f"guess-{i}").status_code for i in range(CLIENT_FAILURES)]

    refused = sign_in(client, ADMIN_KEY)  # even the right key: a throttled guesser learns nothing
    other = app.test_client()
    elsewhere = sign_in(other, ADMIN_KEY, address="192.0.2.99")

    assert statuses == [401] * CLIENT_FAILURES
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 300
    assert "Set-Cookie" not in refused.headers
    assert elsewhere.status_code == 303, "another client is not held back"
    clock.now += int(refused.headers["Retry-After"])
    assert sign_in(client, ADMIN_KEY).status_code == 303, "and it lifts after Retry-After"


def test_wrong_keys_from_many_clients_throttle_everyone(throttled_app):
    app, _ = throttled_app
    client = app.test_client()
    for i in range(OVERALL_FAILURES):
        sign_in(client, "guess", address=f"10.0.{i // 250}.{i % 250}")

    refused = sign_in(client, ADMIN_KEY, address="192.0.2.200")

    assert refused.status_code == 429 and "Retry-After" in refused.headers


def test_wrong_admin_keys_in_headers_count_too(throttled_app):
    app, _ = throttled_app
    client = app.test_client()
    wrong = {"Authorization": "Bearer not-the-key"}
    for _ in range(CLIENT_FAILURES):
        assert client.get("/admin/tasks", headers=wrong).status_code == 401
    # A submit key is not an admin key either.
    refused = client.get("/admin/tasks", headers={"Authorization": f"Bearer {SUBMIT_KEY}"})

    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_sign_in_attempts"
    assert int(refused.headers["Retry-After"]) > 0


def test_failed_sign_ins_are_logged_without_the_key(throttled_app, caplog):
    app, _ = throttled_app
    caplog.set_level(logging.WARNING)

    sign_in(app.test_client(), "a-wrong-key-guess", address="203.0.113.9")

    (line,) = [r for r in caplog.records if getattr(r, "json_fields", {}).get("event")]
    assert line.json_fields["event"] == Event.ADMIN_SIGN_IN_FAILED
    assert line.json_fields["client"] == "203.0.113.9"
    assert line.json_fields["reason"] == "invalid_admin_key"
    assert "a-wrong-key-guess" not in caplog.text


# --- who the client is --------------------------------------------------------------------------


FRONT_END = "169.254.8.1"  # what the container sees as the peer of every request


def via_front_end(client, key: str, forwarded_for: str):
    return sign_in(client, key, address=FRONT_END, headers={"X-Forwarded-For": forwarded_for})


def test_behind_the_front_end_a_client_cannot_spoof_its_way_past_the_throttle(make_app):
    # Cloud Run's front end appends the address it saw: only the last entry is trusted,
    # whatever the client put before it.
    client = make_app(admin_api_keys=ADMIN_KEY, trusted_proxy_hops=1).test_client()

    statuses = [
        via_front_end(client, "guess", f"10.9.9.{i}, 198.51.100.7").status_code
        for i in range(CLIENT_FAILURES + 1)
    ]
    neighbour = via_front_end(client, ADMIN_KEY, "198.51.100.8")

    assert statuses[-1] == 429, "the spoofed entries did not make new clients"
    assert neighbour.status_code == 303, "clients behind the same front end are told apart"


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(make_app, caplog):
    app = make_app(admin_api_keys=ADMIN_KEY)  # TRUSTED_PROXY_HOPS=0: the connection's address
    caplog.set_level(logging.WARNING)
    client = app.test_client()

    sign_in(client, "guess", address="192.0.2.1", headers={"X-Forwarded-For": "1.2.3.4"})

    assert [r.json_fields["client"] for r in caplog.records if hasattr(r, "json_fields")] == [
        "192.0.2.1"
    ]


def test_an_ipv6_client_is_one_client_across_its_64(make_app):
    app = make_app(admin_api_keys=ADMIN_KEY)
    client = app.test_client()
    statuses = [
        sign_in(client, "guess", address=f"2001:db8:1:2::{i:x}").status_code
        for i in range(CLIENT_FAILURES + 1)
    ]

    assert statuses[-1] == 429


# --- on the real server: gunicorn processes sharing the emulated bucket ----------------------------


@pytest.fixture
def served_admin(pipeline, artifacts_dir):
    """The API under gunicorn, two worker processes: sessions must be shared between them."""
    settings = pipeline.replace(admin_api_keys=ADMIN_KEY, api_workers=2, api_threads=4)
    with running_api(settings, artifacts_dir) as server:
        yield server.url


def accepted_by_every_process(url: str, cookie: str, csrf: str, tries: int = 16) -> list[int]:
    """Answers to one admin request on fresh connections (the kernel spreads them over the
    worker processes)."""
    return [
        requests.post(
            f"{url}/admin/sign-in-links",
            cookies={COOKIE: cookie},
            headers={"X-Admin-CSRF": csrf, "Connection": "close"},
            timeout=10,
        ).status_code
        for _ in range(tries)
    ]


@pytest.mark.integration
def test_on_the_real_server_logout_ends_the_session_in_every_process_within_the_cache_delay(
    served_admin,
):
    browser = requests.Session()
    signed_in = browser.post(
        f"{served_admin}/admin/login", data={"key": ADMIN_KEY}, allow_redirects=False, timeout=10
    )
    cookie = browser.cookies.get(COOKIE)
    page = browser.get(f"{served_admin}/admin", timeout=10).text
    csrf = re.search(r'name="admin-csrf" content="([0-9a-f]+)"', page).group(1)
    before = accepted_by_every_process(served_admin, cookie, csrf)

    browser.post(f"{served_admin}/admin/logout", timeout=10)
    logged_out = time.monotonic()
    while set(accepted_by_every_process(served_admin, cookie, csrf, tries=8)) != {401}:
        assert time.monotonic() - logged_out < CACHE_SECONDS + 2, "revoked within the delay"
        time.sleep(0.2)

    assert signed_in.status_code == 303
    assert set(before) == {201}, before


@pytest.mark.integration
def test_on_the_real_server_a_sign_in_link_opened_eight_times_at_once_signs_in_once(
    served_admin,
):
    link = requests.post(
        f"{served_admin}/admin/sign-in-links",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    ).json()["url"]

    def open_link(_):
        return requests.get(link, allow_redirects=False, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(open_link, range(8)))

    assert statuses == [303] + [401] * 7
