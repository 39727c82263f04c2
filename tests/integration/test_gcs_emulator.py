"""The patched GCS emulator behaves like GCS wherever the pipeline depends on it.

Every test here except the version guard catches a defect of gcp-storage-emulator as
shipped. GCS_EMULATOR_UNDER_TEST=unpatched runs them against the package itself
(`python -m gcp_storage_emulator start`) to show that they do.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import storage

from devstack.emulators import EmulatorProcess, free_port, start_gcs_emulator, wait_for_http
from devstack.emulators.process import spawn
from taskcore.errors import EmulatorError

pytestmark = pytest.mark.integration

UNPATCHED = os.environ.get("GCS_EMULATOR_UNDER_TEST") == "unpatched"


@contextlib.contextmanager
def start_unpatched(log_path: str, data_dir: str | None = None):
    """The pinned package as shipped, for checking that these tests catch its defects."""
    host, port = "127.0.0.1", free_port()
    argv = [sys.executable, "-m", "gcp_storage_emulator"]
    argv += ["-d", data_dir, "start"] if data_dir else ["start", "--in-memory"]
    proc = spawn(argv + ["--host", host, "--port", str(port)], log_path)
    with EmulatorProcess(
        "gcs", proc, host, port, "STORAGE_EMULATOR_HOST", f"http://{host}:{port}"
    ) as emu:
        wait_for_http(f"http://{host}:{port}/", 30, proc)
        yield emu


def start_emulator(log_path: str, data_dir: str | None = None):
    """The emulator under test, as a context manager that always stops it."""
    if UNPATCHED:
        return start_unpatched(log_path, data_dir)
    return start_gcs_emulator(log_path=log_path, data_dir=data_dir)


def make_client(emulator) -> storage.Client:
    """A storage client on emulator; STORAGE_EMULATOR_HOST alone makes it skip credentials."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", emulator.env_value)
        client = storage.Client(project="local-project")
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
    client._http.mount("http://", adapter)
    return client


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """One emulator for this module, stopped at its end."""
    log_path = tmp_path_factory.mktemp("gcs-emulator") / "gcs-emulator.log"
    with start_emulator(str(log_path)) as emu:
        yield emu


@pytest.fixture(scope="module")
def client(emulator) -> storage.Client:
    """A storage client on the module's emulator."""
    return make_client(emulator)


@pytest.fixture
def bucket(client) -> storage.Bucket:
    """A new, empty bucket for one test."""
    return client.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


def test_create_only_write_twice_keeps_the_first(bucket):
    bucket.blob("out.json").upload_from_string(b"first", if_generation_match=0)

    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("out.json").upload_from_string(b"second", if_generation_match=0)

    assert bucket.blob("out.json").download_as_bytes() == b"first"


def test_concurrent_create_only_writes_have_exactly_one_winner(bucket):
    racers = 16
    start = threading.Barrier(racers)

    def race(i: int) -> bytes | None:
        start.wait()
        try:
            bucket.blob("contended").upload_from_string(
                f"racer {i}".encode(), if_generation_match=0
            )
        except gexc.PreconditionFailed:
            return None
        return f"racer {i}".encode()

    with ThreadPoolExecutor(max_workers=racers) as pool:
        winners = [w for w in pool.map(race, range(racers)) if w is not None]

    assert len(winners) == 1
    assert bucket.blob("contended").download_as_bytes() == winners[0]


def test_generation_match_overwrites_only_the_generation_named(bucket):
    first = bucket.blob("doc")
    first.upload_from_string(b"v1", if_generation_match=0)

    second = bucket.blob("doc")
    second.upload_from_string(b"v2", if_generation_match=first.generation)
    assert second.generation != first.generation
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("doc").upload_from_string(b"v3", if_generation_match=first.generation)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("absent").upload_from_string(b"v1", if_generation_match=second.generation)

    assert bucket.blob("doc").download_as_bytes() == b"v2"
    assert not bucket.blob("absent").exists()


def test_resumable_uploads_honour_preconditions(bucket, client):
    urls: list[str] = []
    client._http.hooks["response"].append(lambda resp, *args, **kwargs: urls.append(resp.url))
    data = os.urandom(600 * 1024)
    try:
        # The client uploads up to 8 MiB of known size in one multipart request; a stream of
        # unknown size goes resumable, here in three 256 KiB chunks.
        bucket.blob("big.bin", chunk_size=256 * 1024).upload_from_file(
            io.BytesIO(data), if_generation_match=0
        )
        with pytest.raises(gexc.PreconditionFailed):
            bucket.blob("big.bin", chunk_size=256 * 1024).upload_from_file(
                io.BytesIO(b"x" * 300_000), if_generation_match=0
            )
    finally:
        client._http.hooks["response"].pop()

    assert any("uploadType=resumable" in url for url in urls)
    assert not any("uploadType=multipart" in url for url in urls)
    assert bucket.blob("big.bin").download_as_bytes() == data


def test_resumable_upload_rechecks_preconditions_when_it_completes(bucket, emulator):
    # The object appears between starting a create-only session and sending its data.
    base = f"{emulator.env_value}/upload/storage/v1/b/{bucket.name}/o"
    started = requests.post(
        base,
        params={"uploadType": "resumable", "name": "late", "ifGenerationMatch": "0"},
        json={"name": "late"},
        timeout=10,
    )
    assert started.status_code == 200
    bucket.blob("late").upload_from_string(b"winner", if_generation_match=0)

    finished = requests.put(
        started.headers["Location"],
        data=b"loser",
        headers={"Content-Range": "bytes 0-4/5"},
        timeout=10,
    )

    assert finished.status_code == 412
    assert bucket.blob("late").download_as_bytes() == b"winner"


def test_simple_media_upload_answers_412_shaped_like_gcs(bucket, emulator):
    url = f"{emulator.env_value}/upload/storage/v1/b/{bucket.name}/o"
    params = {"uploadType": "media", "name": "simple.txt", "ifGenerationMatch": "0"}

    first = requests.post(url, params=params, data=b"one", timeout=10)
    second = requests.post(url, params=params, data=b"two", timeout=10)

    assert first.status_code == 200
    assert second.status_code == 412
    error = second.json()["error"]
    assert error["code"] == 412
    assert error["errors"][0]["reason"] == "conditionNotMet"
    assert bucket.blob("simple.txt").download_as_bytes() == b"one"


def test_delete_honours_preconditions_and_stale_generations(bucket):
    blob = bucket.blob("victim")
    blob.upload_from_string(b"v1")
    stale = bucket.get_blob("victim")

    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("victim").delete(if_generation_match=blob.generation + 1)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("victim").delete(if_metageneration_match=2)
    bucket.blob("victim").upload_from_string(b"v2", if_generation_match=blob.generation)
    # A handle from before the overwrite names the old generation: GCS has nothing to delete.
    with pytest.raises(gexc.NotFound):
        stale.delete()
    assert bucket.blob("victim").download_as_bytes() == b"v2"

    current = bucket.get_blob("victim")
    current.delete(if_generation_match=current.generation)
    assert not bucket.blob("victim").exists()


def test_metadata_reads_patches_and_downloads_honour_preconditions(bucket):
    blob = bucket.blob("meta.json")
    blob.upload_from_string(b"{}", content_type="application/json", if_generation_match=0)
    assert (blob.metageneration, blob.content_type) == (1, "application/json")

    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("meta.json").reload(if_generation_match=blob.generation + 1)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("meta.json").download_as_bytes(if_generation_match=blob.generation + 1)
    assert bucket.blob("meta.json").download_as_bytes(if_generation_match=blob.generation) == b"{}"

    blob.metadata = {"state": "done"}
    blob.patch(if_metageneration_match=1)
    assert blob.metageneration == 2
    blob.metadata = {"state": "again"}
    with pytest.raises(gexc.PreconditionFailed):
        blob.patch(if_metageneration_match=1)
    assert bucket.get_blob("meta.json").metadata == {"state": "done"}


def test_list_with_prefix_delimiter_and_pages(bucket, client):
    names = ["a/1", "a/2", "a/b/3", "b/1", "top"]
    for name in names:
        bucket.blob(name).upload_from_string(b"x")

    assert [b.name for b in client.list_blobs(bucket, prefix="a/")] == ["a/1", "a/2", "a/b/3"]
    listing = client.list_blobs(bucket, prefix="a/", delimiter="/")
    assert [b.name for b in listing] == ["a/1", "a/2"]
    assert listing.prefixes == {"a/b/"}
    assert [b.name for b in client.list_blobs(bucket, max_results=2)] == ["a/1", "a/2"]
    pages = list(client.list_blobs(bucket, page_size=2).pages)
    assert [[b.name for b in page] for page in pages] == [["a/1", "a/2"], ["a/b/3", "b/1"], ["top"]]


def test_list_honours_start_and_end_offsets_within_a_prefix(bucket, client):
    for name in ["j/0001/a", "j/0001/b", "j/0002/a", "j/0003/a", "k/0002/a"]:
        bucket.blob(name).upload_from_string(b"x")

    listed = client.list_blobs(bucket, prefix="j/", start_offset="j/0002/", end_offset="j/0003/")
    from_offset = client.list_blobs(bucket, prefix="j/", start_offset="j/0001/b")

    assert [b.name for b in listed] == ["j/0002/a"]
    assert [b.name for b in from_offset] == ["j/0001/b", "j/0002/a", "j/0003/a"]


def test_delimiter_pages_count_each_collapsed_prefix_once(bucket, client):
    for name in ["p/a/1", "p/a/2", "p/a/3", "p/b", "p/c/1", "p/d"]:
        bucket.blob(name).upload_from_string(b"x")

    pages = list(client.list_blobs(bucket, prefix="p/", delimiter="/", page_size=2).pages)

    assert [sorted([*page.prefixes, *(b.name for b in page)]) for page in pages] == [
        ["p/a/", "p/b"],
        ["p/c/", "p/d"],
    ]


def test_a_page_costs_the_same_however_many_names_follow_it(bucket, client):
    def write(names) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda name: bucket.blob(name).upload_from_string(b""), names))

    def page_seconds() -> float:
        started = time.monotonic()
        for _ in range(5):
            page = next(client.list_blobs(bucket, prefix="journal/", page_size=50).pages)
            assert page.num_items == 50
        return (time.monotonic() - started) / 5

    write(f"journal/{i:05d}" for i in range(60))
    few = page_seconds()
    write(f"journal/{i:05d}" for i in range(60, 2500))
    many = page_seconds()

    # Patched: the same. Shipped, every listing walks, serialises and sorts all 2,500.
    assert many < max(2 * few, 0.01), (few, many)


def test_objects_read_back_by_handle_whatever_their_name(bucket):
    name = "outputs/odd name?#%.txt"
    bucket.blob(name).upload_from_string(b"odd", content_type="text/plain", if_generation_match=0)

    # get_blob() fills in mediaLink, which download_as_bytes() then fetches.
    assert bucket.get_blob(name).download_as_bytes() == b"odd"


def test_a_stalled_connection_does_not_block_other_clients(bucket, emulator):
    with socket.create_connection((emulator.host, emulator.port), timeout=5) as stalled:
        # Headers promise a body that never comes, as from a client that died mid-request.
        stalled.sendall(
            f"POST /upload/storage/v1/b/{bucket.name}/o?uploadType=media&name=s HTTP/1.1\r\n"
            "Host: x\r\nContent-Length: 100\r\n\r\nabc".encode()
        )
        time.sleep(0.2)
        started = time.monotonic()
        bucket.blob("other").upload_from_string(b"ok", timeout=5, retry=None)
        assert time.monotonic() - started < 2


def test_write_cost_does_not_grow_with_the_object_count(bucket):
    count, window = 1500, 300

    def write(i: int) -> float:
        bucket.blob(f"outputs/{i:06d}").upload_from_string(b"{}", if_generation_match=0)
        return time.monotonic()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        finished = sorted(pool.map(write, range(count)))

    first_rate = window / (finished[window - 1] - started)
    last_rate = window / (finished[-1] - finished[-window - 1])
    # Patched: about equal. The shipped package re-writes all metadata per write: ~5x slower.
    assert last_rate > 0.5 * first_rate, (first_rate, last_rate)


def test_data_dir_survives_a_restart(tmp_path):
    data_dir = str(tmp_path / "data")
    with start_emulator(str(tmp_path / "first.log"), data_dir) as first:
        blob = make_client(first).create_bucket("kept").blob("out.json")
        blob.upload_from_string(b"kept", if_generation_match=0)
    assert first.proc.returncode == 0, "SIGTERM must stop the emulator cleanly"

    with start_emulator(str(tmp_path / "second.log"), data_dir) as second:
        kept = make_client(second).bucket("kept")
        assert kept.get_blob("out.json").generation == blob.generation
        with pytest.raises(gexc.PreconditionFailed):
            kept.blob("out.json").upload_from_string(b"again", if_generation_match=0)
        assert kept.blob("out.json").download_as_bytes() == b"kept"


def test_every_write_acknowledged_before_a_stop_survives_the_restart(tmp_path):
    # Writers keep going while the emulator is stopped, five times over: a write answered
    # 200 must be there after the restart, at the generation it was answered with (the
    # pipeline pins outputs by generation). The emulator used to flush its metadata before
    # the requests it was still handling had finished, and lost what they wrote (about one
    # stop in five lost one).
    data_dir = str(tmp_path / "data")
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()

    def write(emulator, prefix: str, stop: threading.Event) -> None:
        bucket = make_client(emulator).bucket("kept")
        for n in range(100_000):
            if stop.is_set():
                return
            blob = bucket.blob(f"{prefix}/{n}.txt")
            try:
                blob.upload_from_string(b"x" * 2048, if_generation_match=0, retry=None)
            except Exception:
                return  # the emulator has stopped answering
            with lock:
                acknowledged[blob.name] = blob.generation

    for round_ in range(5):
        with start_emulator(str(tmp_path / f"round{round_}.log"), data_dir) as emulator:
            if round_ == 0:
                make_client(emulator).create_bucket("kept")
            stop = threading.Event()
            writers = [
                threading.Thread(target=write, args=(emulator, f"r{round_}w{i}", stop))
                for i in range(8)
            ]
            for thread in writers:
                thread.start()
            goal = len(acknowledged) + 100
            while len(acknowledged) < goal and any(t.is_alive() for t in writers):
                time.sleep(0.01)
            emulator.stop()
            stop.set()
            for thread in writers:
                thread.join(30)

    with start_emulator(str(tmp_path / "last.log"), data_dir) as last:
        kept = {b.name: b.generation for b in make_client(last).list_blobs("kept")}
    missing = {name for name, generation in acknowledged.items() if kept.get(name) != generation}
    assert len(acknowledged) >= 500
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged writes lost"


def test_the_patch_refuses_any_other_package_version():
    from devstack.emulators.gcs import PINNED_VERSION, check_package_version

    check_package_version()  # the installed, pinned version
    with pytest.raises(EmulatorError, match=PINNED_VERSION):
        check_package_version("2026.7.20")
    # The guard runs at import time, before anything reaches into the package's internals.
    fake = "import importlib.metadata as m; m.version = lambda name: '2026.7.20'; "
    result = subprocess.run(
        [sys.executable, "-c", fake + "import devstack.emulators.gcs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "2026.7.20 is installed" in result.stderr
