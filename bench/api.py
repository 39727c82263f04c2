"""Throughput and latency of POST /submit-task on the real server, auth and status records on.

Starts the Pub/Sub and GCS emulators and `python -m task_api.server` (gunicorn, the default
2 workers x 16 threads, LOG_LEVEL=INFO as in production) on free ports, then drives it with
bench/loadgen.py in a separate process:

1. closed loop: --runs runs of 2,000 requests at concurrency 16, status records ON; then
   the same against a second server with QUEUED_STATUS_RECORDS=false, to price the records
   (req/s, latency and API CPU per request, with and without);
2. sustained: open loop at --sustained-rate (default 80% of 625 req/s) for 60 s, status
   records ON: per-second p50/p99 and API RSS; flat = p99 of the last 10 s within 1.5x of the
   first 10 s, and RSS growth within 10%; plotted to bench/results/api-latency.png;
3. every accepted task has its `queued` status record once the writers drain.

Targets: >= 625 req/s (5x the recipe's 125) with p99 <= 60 ms and zero errors.
Prints a table and writes bench/results/api.json.

    .venv/bin/python bench/api.py [--runs 3] [--requests 2000] [--concurrency 16]
        [--sustained-seconds 60] [--sustained-rate 500] [--skip-sustained]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from api_report import TARGET_P99_MS, plot, table

from devstack.emulators import free_port, start_gcs_emulator, start_pubsub_emulator, wait_for_http
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.settings import Settings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOADGEN = HERE / "loadgen.py"
API_KEY = "bench-submit-key"
BODY = json.dumps({"task_type": "data_transformation", "dataset_size": 10})
TARGET_RPS = 625.0
WARMUP_REQUESTS = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the server and its processes ------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """pid and its children (gunicorn's master and workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [pid, *(int(p) for p in children.stdout.split())]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of pid and its children so far."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mib(pid: int) -> float:
    """Resident memory of pid and its children, MiB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@contextlib.contextmanager
def api_server(settings: Settings, log_dir: Path, **env: str):
    """gunicorn on a free port with these settings; stopped (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    environ = {**os.environ, **settings_environ(settings), "PORT": str(port), **env}
    with open(log_dir / f"api-{port}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "task_api.server", "--host", "127.0.0.1", "--port", str(port)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 30, proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def settings_environ(settings: Settings) -> dict[str, str]:
    """Settings as the environment variables a process reads (Settings.as_environ)."""
    return settings.as_environ()


# --- load --------------------------------------------------------------------------------------


def load(url: str, *args: str) -> list[tuple[float, float, int]]:
    """Run bench/loadgen.py against url; its (offset s, latency s, status) samples."""
    out = subprocess.run(
        [
            sys.executable,
            str(LOADGEN),
            "--url",
            f"{url}/submit-task",
            "--body",
            BODY,
            "--header",
            f"Authorization: Bearer {API_KEY}",
            *args,
        ],
        capture_output=True,
        check=True,
    )
    return [tuple(s) for s in json.loads(out.stdout)["samples"]]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def closed_run(url: str, proc, requests_: int, concurrency: int) -> dict:
    """One closed-loop run: req/s, p50/p99 ms, errors, API CPU ms per request."""
    cpu_before = cpu_seconds(proc.pid)
    samples = load(url, "--concurrency", str(concurrency), "--requests", str(requests_))
    cpu = cpu_seconds(proc.pid) - cpu_before
    latencies = [s[1] for s in samples]
    span = max(s[0] + s[1] for s in samples) - min(s[0] for s in samples)
    return {
        "requests": len(samples),
        "rps": len(samples) / span,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": sum(s[2] != 202 for s in samples),
        "api_cpu_ms_per_request": cpu / len(samples) * 1000,
    }


def closed_loop(url: str, proc, runs: int, requests_: int, concurrency: int) -> dict:
    """Warm up, then `runs` closed-loop runs; each run and the medians."""
    load(url, "--concurrency", str(concurrency), "--requests", str(WARMUP_REQUESTS))
    results = [closed_run(url, proc, requests_, concurrency) for _ in range(runs)]
    medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
    return {"runs": results, "median": medians}


def settle(proc, timeout: float = 120.0) -> float:
    """Wait until the API is idle (its writers drained the closed loop's records); seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        if cpu_seconds(proc.pid) - before < 0.05:
            break
    return time.monotonic() - started


def sustained(url: str, proc, rate: float, seconds: float, out_dir: Path) -> dict:
    """Open loop at `rate` for `seconds`: per-second latency and RSS, and the verdicts."""
    settled_after = settle(proc)
    rss: list[tuple[float, float]] = []
    started = time.monotonic()
    # To a file, not a pipe: nothing reads a pipe while the run goes on, and a full one
    # would stall the generator.
    out_path = out_dir / "sustained-samples.json"
    with out_path.open("wb") as out:
        gen = subprocess.Popen(
            [
                sys.executable,
                str(LOADGEN),
                "--url",
                f"{url}/submit-task",
                "--body",
                BODY,
                "--header",
                f"Authorization: Bearer {API_KEY}",
                "--rate",
                str(rate),
                "--duration",
                str(seconds),
            ],
            stdout=out,
        )
    while gen.poll() is None:
        rss.append((time.monotonic() - started, rss_mib(proc.pid)))
        time.sleep(1.0)
    if gen.returncode:
        raise RuntimeError(f"the load generator exited with code {gen.returncode}")
    samples = json.loads(out_path.read_bytes())["samples"]
    per_second: dict[int, list[float]] = {}
    for offset, latency, _ in samples:
        per_second.setdefault(int(offset), []).append(latency * 1000)
    timeline = [
        {
            "second": s,
            "requests": len(v),
            "p50_ms": percentile(v, 50),
            "p99_ms": percentile(v, 99),
        }
        for s, v in sorted(per_second.items())
    ]
    first = [x[1] * 1000 for x in samples if x[0] < 10]
    last = [x[1] * 1000 for x in samples if x[0] >= seconds - 10]
    p99_first, p99_last = percentile(first, 99), percentile(last, 99)
    rss_start = statistics.median(r for t, r in rss if t < 5)
    rss_end = statistics.median(r for t, r in rss if t > seconds - 5)
    return {
        "rate": rate,
        "seconds": seconds,
        "idle_wait_seconds": settled_after,
        "requests": len(samples),
        "errors": sum(s[2] != 202 for s in samples),
        "p50_ms": percentile([s[1] * 1000 for s in samples], 50),
        "p99_ms": percentile([s[1] * 1000 for s in samples], 99),
        "p99_first_10s_ms": p99_first,
        "p99_last_10s_ms": p99_last,
        "flat": p99_last <= 1.5 * p99_first,
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "rss_growth": rss_end / rss_start - 1,
        "timeline": timeline,
        "rss": rss,
    }


def count_status_records(settings: Settings, expected: int, timeout: float = 60) -> int:
    """Status records in the bucket once the count stops growing (or reaches expected)."""
    bucket = make_bucket(settings, storage_client(settings))
    deadline, count = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        previous, count = count, sum(1 for _ in bucket.list_blobs(prefix="status/"))
        if count >= expected or count == previous:
            break
        time.sleep(2)
    return count


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sustained-seconds", type=float, default=60.0)
    parser.add_argument("--sustained-rate", type=float, default=0.8 * TARGET_RPS)
    parser.add_argument("--skip-sustained", action="store_true")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "concurrency": args.concurrency,
        "requests_per_run": args.requests,
        "closed_loop": {},
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-") as tmp,
        start_pubsub_emulator(log_path=f"{tmp}/pubsub.log") as pubsub,
        start_gcs_emulator(log_path=f"{tmp}/gcs.log") as gcs,
    ):
        os.environ.update({**pubsub.env, **gcs.env})
        report["machine"]["pubsub_emulator"] = pubsub.kind
        settings = Settings.from_env(
            {}, api_keys=API_KEY, log_level="INFO", publish_timeout_seconds=4.0
        )
        report["api"] = {"workers": settings.api_workers, "threads": settings.api_threads}
        bootstrap(settings)
        log_dir = Path(tmp)
        accepted = 0
        for name, records in (("status_on", "true"), ("status_off", "false")):
            with api_server(settings, log_dir, QUEUED_STATUS_RECORDS=records) as (url, proc):
                print(f"closed loop, status records {records} ...", flush=True)
                result = closed_loop(url, proc, args.runs, args.requests, args.concurrency)
                report["closed_loop"][name] = result
                if records == "true":
                    accepted += WARMUP_REQUESTS + sum(r["requests"] for r in result["runs"])
                    if not args.skip_sustained:
                        print(f"sustained {args.sustained_rate:.0f} req/s ...", flush=True)
                        report["sustained"] = sustained(
                            url, proc, args.sustained_rate, args.sustained_seconds, log_dir
                        )
                        accepted += report["sustained"]["requests"]
                        plot(report["sustained"], RESULTS / "api-latency.png")
        # Records of status_off's tasks are never written: count only this server's.
        report["status_records"] = {
            "accepted": accepted,
            "written": count_status_records(settings, accepted),
        }
    on = report["closed_loop"]["status_on"]["median"]
    off = report["closed_loop"]["status_off"]["median"]
    report["status_record_cost"] = {
        "api_cpu_ms_per_request": on["api_cpu_ms_per_request"] - off["api_cpu_ms_per_request"],
        "rps_ratio": on["rps"] / off["rps"],
    }
    checks = {
        f"rps >= {TARGET_RPS:.0f}": on["rps"] >= TARGET_RPS,
        f"p99 <= {TARGET_P99_MS:.0f} ms": on["p99_ms"] <= TARGET_P99_MS,
        "zero errors": on["errors"] == 0,
        "every accepted task has a status record": (
            report["status_records"]["written"] >= report["status_records"]["accepted"]
        ),
    }
    if "sustained" in report:
        s = report["sustained"]
        checks["sustained: p99 last 10 s <= 1.5x first 10 s"] = s["flat"]
        checks["sustained: RSS growth <= 10%"] = s["rss_growth"] <= 0.10
        checks["sustained: zero errors"] = s["errors"] == 0
    report["checks"] = checks
    (RESULTS / "api.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report))
    print(
        f"\nstatus records: {report['status_record_cost']['api_cpu_ms_per_request']:.2f} ms "
        f"API CPU per request, {1 - report['status_record_cost']['rps_ratio']:.0%} of req/s; "
        f"{report['status_records']['written']} of {report['status_records']['accepted']} "
        "accepted tasks have their queued record"
    )
    if "sustained" in report:
        s = report["sustained"]
        print(
            f"sustained: p99 first 10 s {s['p99_first_10s_ms']:.1f} ms, last 10 s "
            f"{s['p99_last_10s_ms']:.1f} ms; API RSS {s['rss_start_mib']:.0f} -> "
            f"{s['rss_end_mib']:.0f} MiB ({s['rss_growth']:+.1%}); plot: "
            f"{(RESULTS / 'api-latency.png').relative_to(HERE.parent)}"
        )
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"wrote {(RESULTS / 'api.json').relative_to(HERE.parent)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
