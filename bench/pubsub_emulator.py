"""Benchmark: our pure-Python Pub/Sub emulator side by side with Google's, via the Python client.

Each figure is the median of 3 runs. Run: `.venv/bin/python bench/pubsub_emulator.py [--quick]`.
Everything talks to 127.0.0.1 on free ports; every emulator started here is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.types import BatchSettings, FlowControl

from devstack.emulators import start_pubsub_emulator
from devstack.emulators.google_pubsub import find_google_pubsub_emulator
from devstack.emulators.process import temporary_env

RUNS = 3
PAYLOAD = b"x" * 1024
TARGETS = {"rss_mb": 300.0, "startup_s": 1.0}


def emulator_env(value: str):
    """PUBSUB_EMULATOR_HOST=value while clients are created."""
    return temporary_env("PUBSUB_EMULATOR_HOST", value)


class Bench:
    """Clients and fresh resource names against one running emulator."""

    def __init__(self, handle) -> None:
        self.handle = handle
        with emulator_env(handle.env_value):
            self.pub = pubsub_v1.PublisherClient(
                batch_settings=BatchSettings(
                    max_messages=1000, max_bytes=2_000_000, max_latency=0.01
                )
            )
            self.sub = pubsub_v1.SubscriberClient()
        self.project = f"projects/bench-{uuid.uuid4().hex[:8]}"

    def fresh(self) -> tuple[str, str]:
        """A new topic with one subscription."""
        name = uuid.uuid4().hex[:10]
        topic = self.pub.create_topic(name=f"{self.project}/topics/t-{name}").name
        sub = f"{self.project}/subscriptions/s-{name}"
        self.sub.create_subscription(
            request={"name": sub, "topic": topic, "ack_deadline_seconds": 60}
        )
        return topic, sub

    def publish(self, topic: str, count: int) -> float:
        """Seconds to publish count 1 KB messages with the batching client."""
        start = time.perf_counter()
        futures = [self.pub.publish(topic, PAYLOAD) for _ in range(count)]
        for future in futures:
            future.result(timeout=300)
        return time.perf_counter() - start

    def sync_pull(self, sub: str, count: int) -> float:
        """Seconds to Pull and Acknowledge count messages, 1000 at a time."""
        done = 0
        start = time.perf_counter()
        while done < count:
            request = {"subscription": sub, "max_messages": 1000}
            received = self.sub.pull(request=request, timeout=30).received_messages
            if received:
                self.sub.acknowledge(subscription=sub, ack_ids=[r.ack_id for r in received])
                done += len(received)
        return time.perf_counter() - start

    def streaming_pull(self, sub: str, count: int) -> float:
        """Seconds to receive and ack count messages through subscribe()."""
        lock = threading.Lock()
        seen = [0]
        done = threading.Event()

        def callback(message):
            message.ack()
            with lock:
                seen[0] += 1
                if seen[0] >= count:
                    done.set()

        start = time.perf_counter()
        future = self.sub.subscribe(sub, callback, flow_control=FlowControl(max_messages=1000))
        try:
            if not done.wait(300):
                raise RuntimeError(f"streaming pull got {seen[0]} of {count}")
            elapsed = time.perf_counter() - start
        finally:
            future.cancel()
            with contextlib.suppress(Exception):
                future.result(timeout=10)
        return elapsed

    def close(self) -> None:
        """Release the clients."""
        self.pub.stop()
        self.sub.close()


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group (Google's runs a JVM child)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


def time_to_first_answer(kind: str, logdir: str) -> float:
    """Seconds from launch until a ListTopics call answers."""
    start = time.perf_counter()
    handle = start_pubsub_emulator(choice=kind, log_path=os.path.join(logdir, f"{kind}-start.log"))
    try:
        with emulator_env(handle.env_value):
            publisher = pubsub_v1.PublisherClient()
        while True:
            try:
                list(publisher.list_topics(project="projects/startup", timeout=5))
                return time.perf_counter() - start
            except Exception:
                time.sleep(0.01)
    finally:
        handle.stop()


def measure(kind: str, counts: dict, logdir: str) -> dict:
    """All figures for one emulator: medians of RUNS runs."""
    results: dict[str, list[float]] = {k: [] for k in ("publish", "sync", "stream")}
    handle = start_pubsub_emulator(choice=kind, log_path=os.path.join(logdir, f"{kind}.log"))
    try:
        bench = Bench(handle)
        for _ in range(RUNS):
            topic, sub = bench.fresh()
            results["publish"].append(counts["publish"] / bench.publish(topic, counts["publish"]))
            results["sync"].append(counts["publish"] / bench.sync_pull(sub, counts["publish"]))
            topic, sub = bench.fresh()
            bench.publish(topic, counts["stream"])
            results["stream"].append(counts["stream"] / bench.streaming_pull(sub, counts["stream"]))
        topic, _ = bench.fresh()
        for _ in range(counts["retained"] // 20_000):
            bench.publish(topic, 20_000)
        time.sleep(1)
        rss = group_rss_mb(handle.proc.pid)
        bench.close()
    finally:
        handle.stop()
    startup = [time_to_first_answer(kind, logdir) for _ in range(RUNS)]
    out = {k: statistics.median(v) for k, v in results.items()}
    out["rss_mb"] = rss
    out["startup_s"] = statistics.median(startup)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    args = parser.parse_args()
    counts = {"publish": 20_000, "stream": 10_000, "retained": 100_000}
    if args.quick:
        counts = {"publish": 2_000, "stream": 1_000, "retained": 20_000}
    kinds = ["python"]
    if find_google_pubsub_emulator() is not None:
        kinds.insert(0, "google")
    else:
        print("Google's emulator is not installed: measuring ours alone", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pubsub-bench-") as logdir:
        results = {kind: measure(kind, counts, logdir) for kind in kinds}
    rows = [
        ("publish, msgs/s", "publish", "{:,.0f}", True),
        ("sync pull+ack, msgs/s", "sync", "{:,.0f}", True),
        ("streaming pull+ack, msgs/s", "stream", "{:,.0f}", True),
        (f"RSS with {counts['retained']:,} x 1 KB retained, MB", "rss_mb", "{:,.0f}", False),
        ("time to first answer, s", "startup_s", "{:.2f}", False),
    ]
    print(f"\nPub/Sub emulators, medians of {RUNS} (1 KB messages, {counts['publish']:,} per run)")
    header = f"{'measure':<44}" + "".join(f"{k:>12}" for k in kinds) + "  verdict"
    print(header)
    print("-" * len(header))
    failed = False
    for label, key, fmt, higher_better in rows:
        line = f"{label:<44}" + "".join(f"{fmt.format(results[k][key]):>12}" for k in kinds)
        ours = results["python"][key]
        if higher_better and "google" in results:
            ok = ours >= results["google"][key]
            verdict = "ours >= Google's" if ok else "ours < Google's"
        elif key in TARGETS:
            ok = ours <= TARGETS[key]
            verdict = f"target <= {TARGETS[key]:g}: {'met' if ok else 'missed'}"
        else:
            ok, verdict = True, ""
        failed |= not ok
        print(f"{line}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
