"""The two Cloud Monitoring numbers of a subscription, served as Cloud Monitoring serves them.

Pub/Sub has no RPC that counts a subscription's messages: in Google Cloud the backlog is
read from Cloud Monitoring, `pubsub.googleapis.com/subscription/num_undelivered_messages`
and `.../oldest_unacked_message_age`, through projects.timeSeries.list. This emulator knows
both exactly, and serves them through a minimal v3 timeSeries.list over HTTP on its own
port (MONITORING_EMULATOR_HOST), so the code reading them is the code that runs in
production. Only what that code asks is understood: `metric.type = "..."` and
`resource.labels.subscription_id = "..."` or `= one_of("...", ...)`; one point, now.
Google's emulator has no such endpoint: there the dashboard says the backlog is unavailable.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devstack.emulators.pubsub.broker import Broker

log = logging.getLogger(__name__)

UNDELIVERED = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_UNACKED = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
_PATH = re.compile(r"^/v3/projects/([^/]+)/timeSeries$")
_METRIC = re.compile(r'metric\.type\s*=\s*"([^"]+)"')
_SUBSCRIPTION = re.compile(r'resource\.labels\.subscription_id\s*=\s*"([^"]+)"')
_ONE_OF = re.compile(r"resource\.labels\.subscription_id\s*=\s*one_of\(([^)]*)\)")


def subscription_backlog(broker: Broker, name: str, now: float) -> tuple[int, int]:
    """(unacknowledged messages, age in seconds of the oldest) of one subscription."""
    with broker.lock:
        sub = broker.subs.get(name)
        if sub is None:
            return 0, 0
        published = [msg.ts for msg, _ in sub.pending]
        published += [lease.msg.ts for lease in sub.leases.values()]
        # Nacked messages waiting out their retry backoff are still owed to subscribers.
        published += [entry[3].ts for entry in broker._delayed if entry[2] is sub]
    oldest = min(published, default=now)
    return len(published), max(0, int(now - oldest))


def time_series(broker: Broker, project: str, query: str, now: float) -> list[dict]:
    """The series a timeSeries.list filter selects: one per (metric, subscription)."""
    metrics = [m for m in _METRIC.findall(query) if m in (UNDELIVERED, OLDEST_UNACKED)]
    wanted = set(_SUBSCRIPTION.findall(query))
    for listed in _ONE_OF.findall(query):
        wanted |= set(re.findall(r'"([^"]*)"', listed))
    prefix = f"projects/{project}/subscriptions/"
    with broker.lock:
        names = sorted(n for n in broker.subs if n.startswith(prefix))
    stamp = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    series = []
    for name in names:
        short = name[len(prefix) :]
        if wanted and short not in wanted:
            continue
        undelivered, age = subscription_backlog(broker, name, now)
        for metric in metrics:
            value = undelivered if metric == UNDELIVERED else age
            series.append(
                {
                    "metric": {"type": metric},
                    "resource": {
                        "type": "pubsub_subscription",
                        "labels": {"project_id": project, "subscription_id": short},
                    },
                    "metricKind": "GAUGE",
                    "valueType": "INT64",
                    "points": [
                        {
                            "interval": {"startTime": stamp, "endTime": stamp},
                            # int64 values are strings in Google's JSON mapping.
                            "value": {"int64Value": str(value)},
                        }
                    ],
                }
            )
    return series


def _handler(broker: Broker):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            match = _PATH.match(url.path)
            if match is None:
                self._answer(HTTPStatus.NOT_FOUND, {"error": {"code": 404, "message": "not found"}})
                return
            query = urllib.parse.parse_qs(url.query).get("filter", [""])[0]
            if not _METRIC.search(query):
                message = "filter must name a metric.type"
                self._answer(HTTPStatus.BAD_REQUEST, {"error": {"code": 400, "message": message}})
                return
            series = time_series(broker, match.group(1), query, time.time())
            self._answer(HTTPStatus.OK, {"timeSeries": series} if series else {})

        def _answer(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # one line per request would drown the log
            pass

    return Handler


class MonitoringServer:
    """The timeSeries.list endpoint on host:port, in a daemon thread until stop()."""

    def __init__(self, broker: Broker, host: str, port: int) -> None:
        self._httpd = ThreadingHTTPServer((host, port), _handler(broker))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="monitoring-http", daemon=True
        )

    def start(self) -> MonitoringServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
