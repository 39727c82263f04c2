"""FaultProxy carrying HTTP/1.1 keep-alive between a storage client and the GCS emulator."""

from __future__ import annotations

import errno
import threading
import time

import pytest
import requests

from chaos.proxy import FaultProxy
from tests.chaos.conftest import storage_via
from tests.chaos.waiting import wait_until

pytestmark = pytest.mark.integration


def upload(bucket, name: str, data: bytes, timeout: float = 5.0) -> None:
    bucket.blob(name).upload_from_string(data, retry=None, timeout=timeout)


def download(bucket, name: str, timeout: float = 5.0) -> bytes:
    return bucket.blob(name).download_as_bytes(retry=None, timeout=timeout)


def root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return exc


def test_writes_and_reads_pass_through_and_every_connection_is_closed(bucket_via_proxy, gcs_proxy):
    objects = {f"pass/{i:03d}.txt": f"object {i}".encode() for i in range(20)}
    for name, data in objects.items():
        upload(bucket_via_proxy, name, data)

    assert {name: download(bucket_via_proxy, name) for name in objects} == objects
    assert sorted(b.name for b in bucket_via_proxy.list_blobs(prefix="pass/")) == sorted(objects)
    # The emulator answers HTTP/1.0 and closes after each answer: a connection per request,
    # each closed through the proxy (its FIN relayed, the client's FIN relayed back).
    assert gcs_proxy.stats().connections_accepted >= 41
    wait_until(lambda: gcs_proxy.stats().connections_open == 0, "every connection closed")
    stats = gcs_proxy.stats()
    assert stats.bytes_to_upstream > 20 * 100 and stats.bytes_to_client > 20 * 100


def test_blackhole_makes_requests_time_out_and_they_pass_again_after(
    bucket_via_proxy, gcs_proxy, pipeline_settings
):
    upload(bucket_via_proxy, "bh/before.txt", b"before")
    gcs_proxy.blackhole()

    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        upload(bucket_via_proxy, "bh/during.txt", b"during", timeout=1.0)
    assert time.monotonic() - started >= 0.9
    fresh = storage_via(gcs_proxy.url, pipeline_settings.project_id)
    with pytest.raises(requests.exceptions.ReadTimeout):  # connected, then nothing
        upload(fresh.bucket(pipeline_settings.bucket_name), "bh/new.txt", b"x", timeout=1.0)

    gcs_proxy.clear()
    upload(bucket_via_proxy, "bh/after.txt", b"after")
    assert download(bucket_via_proxy, "bh/after.txt") == b"after"


def test_refuse_gives_connection_refused_until_cleared(bucket_via_proxy, gcs_proxy):
    upload(bucket_via_proxy, "refuse/before.txt", b"before")
    gcs_proxy.refuse()

    with pytest.raises(requests.exceptions.ConnectionError) as refused:
        download(bucket_via_proxy, "refuse/before.txt")
    assert isinstance(root_cause(refused.value), ConnectionRefusedError)

    gcs_proxy.clear()
    assert download(bucket_via_proxy, "refuse/before.txt") == b"before"


def test_delay_adds_at_least_the_delay_each_way(bucket_via_proxy, gcs_proxy):
    upload(bucket_via_proxy, "delay/object.txt", b"payload")
    gcs_proxy.delay(0.25, 0.25)

    started = time.monotonic()
    assert download(bucket_via_proxy, "delay/object.txt") == b"payload"
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 2.0
    assert gcs_proxy.active_faults() == {"delay"}


def test_reset_breaks_an_in_flight_request_then_traffic_passes_again(
    gcs_emulator, pipeline_settings
):
    # Plain JSON API requests on a proxy of their own: google-cloud-storage also fetches
    # bucket metadata on background threads, whose answers would be held here as well.
    name = "reset/during.txt"
    url = f"/upload/storage/v1/b/{pipeline_settings.bucket_name}/o?uploadType=media&name={name}"
    with FaultProxy(gcs_emulator.env_value, name="gcs") as proxy, requests.Session() as http:
        proxy.delay(0.0, 5.0)  # the answer waits in the proxy: the request stays in flight
        outcome: dict = {}

        def write() -> None:
            started = time.monotonic()
            try:
                http.post(proxy.url + url, data=b"in flight", timeout=10.0)
            except Exception as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        writer = threading.Thread(target=write)
        writer.start()
        # The emulator's answer is held: the request went whole and the call is in flight.
        wait_until(lambda: proxy.stats().held_to_client > 0, "the answer held")
        assert proxy.reset() == 1
        writer.join(timeout=10)

        assert isinstance(outcome.get("error"), requests.exceptions.ConnectionError), outcome
        assert getattr(root_cause(outcome["error"]), "errno", None) == errno.ECONNRESET
        assert outcome["seconds"] < 3.0
        proxy.clear()
        answer = http.get(f"{proxy.url}/storage/v1/b/{pipeline_settings.bucket_name}", timeout=5)
        assert answer.status_code == 200
