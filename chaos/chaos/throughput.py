"""What a FaultProxy costs: the same traffic straight to the emulators and through proxies.

    .venv/bin/python -m chaos.throughput [--objects 2000] [--messages 5000] [--runs 3]

Starts the local emulators (Pub/Sub as TASKCTL_PUBSUB_EMULATOR picks it, and the patched
GCS emulator), then for each run, in turn direct, through a FaultProxy on a thread of this
process, and through a ProxyProcess, measures:

- GCS: create-only object writes per second from 8 threads (the emulator closes every
  connection, so each write is also a new TCP connection through the proxy);
- Pub/Sub: publish RPCs per second one at a time and their median latency (the per-call
  cost), messages published per second in batches of 100, and messages pulled and acked
  per second (batches of 100).

After an untimed warm-up it prints the median of the runs and, for the proxied runs, the
CPU seconds the proxy's loop thread used per 1,000 requests (/proc/self/task/<tid>/stat).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from chaos.proxy import FaultProxy
from chaos.proxy_process import ProxyProcess
from devstack.emulators import start_gcs_emulator, start_pubsub_emulator

PROJECT = "throughput"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    """User + system CPU time from a /proc stat file (of a process or of one thread)."""
    with open(stat_path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def gcs_writes(endpoint: str, objects: int, threads: int = 8) -> tuple[float, int]:
    """Create-only writes per second to a new bucket; (rate, requests made)."""
    client = storage.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=threads * 2)
    client._http.mount("http://", adapter)
    bucket = client.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")

    def write(i: int) -> None:
        bucket.blob(f"outputs/{i:07d}/result.json").upload_from_string(
            b'{"ok": true}\n', content_type="application/json", if_generation_match=0
        )

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, range(objects)))
    return objects / (time.monotonic() - started), objects


def pubsub_rates(address: str, messages: int) -> tuple[dict[str, float], int]:
    """Publish and pull rates through address; (rates, RPCs made)."""
    channel = grpc.insecure_channel(address)
    publisher = PublisherClient(transport=PublisherGrpcTransport(channel=channel))
    subscriber = SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    name = uuid.uuid4().hex[:8]
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/bench-{name}").name
    subscription = subscriber.create_subscription(
        name=f"projects/{PROJECT}/subscriptions/bench-{name}", topic=topic, ack_deadline_seconds=60
    ).name
    single, latencies = min(1000, messages), []
    started = time.monotonic()
    for i in range(single):
        call_started = time.monotonic()
        publisher.publish(topic=topic, messages=[{"data": f"one {i}".encode()}])
        latencies.append(time.monotonic() - call_started)
    rates = {
        "publish RPCs/s (1 message each)": single / (time.monotonic() - started),
        "publish RPC median latency (us)": 1e6 * statistics.median(latencies),
    }
    started = time.monotonic()
    for offset in range(0, messages, 100):
        batch = [{"data": f"batch {i}".encode()} for i in range(offset, offset + 100)]
        publisher.publish(topic=topic, messages=batch)
    rates["messages published/s (100 a call)"] = messages / (time.monotonic() - started)
    pulled, calls, started = 0, single + messages // 100, time.monotonic()
    while pulled < single + messages:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
        ack_ids = [m.ack_id for m in response.received_messages]
        if ack_ids:
            subscriber.acknowledge(subscription=subscription, ack_ids=ack_ids)
        pulled += len(ack_ids)
        calls += 2
    rates["messages pulled+acked/s (100 a pull)"] = pulled / (time.monotonic() - started)
    channel.close()
    return rates, calls


MODES = ("direct", "thread", "process")


@contextlib.contextmanager
def through(mode: str, upstream: str, name: str, requests_made: list[int]):
    """Yield the address to use: the upstream's, or a fresh proxy's (FaultProxy on a thread of
    this process, or ProxyProcess); then report the proxy's CPU time per request."""
    if mode == "direct":
        yield upstream
        return
    proxy = (
        FaultProxy(upstream, name=name) if mode == "thread" else ProxyProcess(upstream, name=name)
    )
    with proxy:
        if mode == "thread":
            stat = f"/proc/self/task/{proxy._thread.native_id}/stat"
        else:
            stat = f"/proc/{proxy.pid}/stat"
        cpu = cpu_seconds(stat)
        yield proxy.url if upstream.startswith("http") else proxy.address
        used = cpu_seconds(stat) - cpu
    per_thousand = 1000 * used / max(1, sum(requests_made))
    print(f"    {mode} proxy {name}: {per_thousand:.3f} CPU s per 1,000 requests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {}
    with start_gcs_emulator() as gcs, start_pubsub_emulator() as pubsub:
        print(f"Pub/Sub emulator: {pubsub.kind}; {os.cpu_count()} CPUs", file=sys.stderr)
        # Untimed: the first calls pay for imports, the JVM's JIT and the emulators' caches.
        gcs_writes(gcs.env_value, min(500, args.objects))
        pubsub_rates(pubsub.env_value, min(1000, args.messages))
        for run in range(args.runs):
            for mode in MODES:
                made: list[int] = []
                with through(mode, gcs.env_value, "gcs", made) as endpoint:
                    rate, count = gcs_writes(endpoint, args.objects)
                    made.append(count)
                results.setdefault(f"{mode} GCS writes/s (8 threads)", []).append(rate)
                made = []
                with through(mode, pubsub.env_value, "pubsub", made) as address:
                    rates, count = pubsub_rates(address, args.messages)
                    made.append(count)
                for what, value in rates.items():
                    results.setdefault(f"{mode} {what}", []).append(value)
                print(f"  run {run + 1} {mode}: GCS {rate:.0f}/s, Pub/Sub {rates}")
    print("medians:")
    for what, values in sorted(results.items(), key=lambda item: item[0].split(" ", 1)[::-1]):
        print(f"  {what:<52} {statistics.median(values):9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
