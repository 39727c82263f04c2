"""Create-only write rate of the local GCS emulator as the object count grows.

Writes N small objects with if_generation_match=0 through google-cloud-storage from a
thread pool against a freshly started emulator, and prints the rate of every 1,000-object
slice (flat = the write cost does not grow with the object count) and the median of the
runs. --compare also runs the unpatched package (`gcp_storage_emulator start --in-memory`).

    .venv/bin/python bench/gcs_write_rate.py [--objects 5000] [--threads 8] [--runs 3] [--compare]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from google.cloud import storage

from devstack.emulators import EmulatorProcess, free_port, start_gcs_emulator, wait_for_http
from devstack.emulators.process import spawn


@contextlib.contextmanager
def unpatched_emulator(log_path: str):
    """The pinned package as shipped, in memory, on a free port."""
    host, port = "127.0.0.1", free_port()
    argv = [sys.executable, "-m", "gcp_storage_emulator", "start", "--in-memory", "-q"]
    proc = spawn(argv + ["--host", host, "--port", str(port)], log_path)
    handle = EmulatorProcess(
        "gcs-unpatched", proc, host, port, "STORAGE_EMULATOR_HOST", f"http://{host}:{port}"
    )
    with handle:
        wait_for_http(f"http://{host}:{port}/", 30, proc)
        yield handle


def client_for(emulator, threads: int) -> storage.Client:
    """A storage client on the emulator whose connection pool fits the thread count."""
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.env_value
    client = storage.Client(project="local-project")
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=threads * 2)
    client._http.mount("http://", adapter)
    return client


def write_objects(emulator, count: int, threads: int) -> list[float]:
    """Write count create-only objects; return the monotonic time each write finished, in order."""
    bucket = client_for(emulator, threads).create_bucket("bench")
    payload = b'{"ok": true}\n'

    def write(i: int) -> float:
        bucket.blob(f"outputs/{i:07d}/result.json").upload_from_string(
            payload, content_type="application/json", if_generation_match=0
        )
        return time.monotonic()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sorted(pool.map(write, range(count)))


def slice_rates(started: float, finished: list[float], size: int) -> list[float]:
    """Writes per second of every consecutive slice of size writes."""
    rates, previous = [], started
    for end in range(size, len(finished) + 1, size):
        rates.append(size / (finished[end - 1] - previous))
        previous = finished[end - 1]
    return rates


def run(label: str, start, count: int, threads: int, size: int) -> tuple[float, list[float]]:
    """One run against a fresh emulator; prints and returns (overall rate, slice rates)."""
    with start() as emulator:
        started = time.monotonic()
        finished = write_objects(emulator, count, threads)
    overall = count / (finished[-1] - started)
    rates = slice_rates(started, finished, size)
    print(
        f"{label}: {overall:7.1f} writes/s overall; per {size}: "
        + " ".join(f"{r:.0f}" for r in rates)
    )
    return overall, rates


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slice", type=int, default=1000)
    parser.add_argument("--data-dir", action="store_true", help="patched emulator with --data-dir")
    parser.add_argument(
        "--compare", action="store_true", help="also run the unpatched package once"
    )
    args = parser.parse_args(argv)
    logs = tempfile.mkdtemp(prefix="gcs-bench-")
    print(f"{args.objects} create-only writes, {args.threads} threads, emulator logs in {logs}")

    results = []
    for i in range(args.runs):
        data_dir = tempfile.mkdtemp(prefix="gcs-data-", dir=logs) if args.data_dir else None

        def start(data_dir=data_dir, i=i):
            return start_gcs_emulator(log_path=f"{logs}/patched-{i}.log", data_dir=data_dir)

        results.append(run(f"patched   run {i + 1}", start, args.objects, args.threads, args.slice))
    overall = statistics.median(r[0] for r in results)
    slices = [statistics.median(r[1][k] for r in results) for k in range(len(results[0][1]))]
    print(
        f"patched median: {overall:.1f} writes/s; per-slice medians: "
        + " ".join(f"{r:.0f}" for r in slices)
    )

    if args.compare:

        def start_unpatched():
            return unpatched_emulator(f"{logs}/unpatched.log")

        run("unpatched run 1", start_unpatched, args.objects, args.threads, args.slice)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
