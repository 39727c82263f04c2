"""How many messages each subscription holds, as Cloud Monitoring reports it.

Pub/Sub has no RPC that counts a subscription's messages. In Google Cloud the numbers are
Cloud Monitoring's `pubsub.googleapis.com/subscription/num_undelivered_messages` and
`.../oldest_unacked_message_age`, read here with projects.timeSeries.list (permission
monitoring.timeSeries.list). Pub/Sub samples them every 60 seconds and they can take a few
minutes to appear, so every number comes with the time it was measured.

Locally, MONITORING_EMULATOR_HOST points at the same endpoint served by our Pub/Sub emulator
(exact, now). Under any other Pub/Sub emulator (PUBSUB_EMULATOR_HOST set, no monitoring
endpoint: Google's) the backlog is reported unavailable, never guessed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.exceptions
import requests

from taskcore.settings import Settings

UNDELIVERED = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_UNACKED = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
MONITORING_URL = "https://monitoring.googleapis.com"
MONITORING_READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
# Pub/Sub's points arrive a few minutes late: look back far enough to find the last one.
LOOKBACK = timedelta(minutes=10)
# However many dashboards refresh, an API process reads at most once per this long.
CACHE_SECONDS = 5.0
TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class SubscriptionBacklog:
    """One subscription's backlog, as last measured (None: no point in the lookback)."""

    undelivered: int | None = None
    oldest_unacked_seconds: int | None = None
    measured_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "undelivered": self.undelivered,
            "oldest_unacked_seconds": self.oldest_unacked_seconds,
            "measured_at": self.measured_at.isoformat() if self.measured_at else None,
        }


@dataclass(frozen=True)
class BacklogReport:
    """The backlog of the subscriptions asked for, and where it comes from."""

    available: bool
    source: str  # cloud_monitoring, emulator, or unavailable
    detail: str
    subscriptions: dict[str, SubscriptionBacklog] = field(default_factory=dict)


class BacklogReader:
    """Reads (and briefly caches) subscriptions' backlog for one project."""

    def __init__(
        self,
        settings: Settings,
        session: requests.Session | None = None,
        clock=time.monotonic,
    ) -> None:
        self.settings = settings
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[str, ...], BacklogReport] | None = None

    @property
    def source(self) -> str:
        if self.settings.monitoring_emulator_host:
            return "emulator"
        if self.settings.pubsub_emulator_host:
            return "unavailable"
        return "cloud_monitoring"

    def invalidate(self) -> None:
        """Forget the cached numbers (a replay or purge just changed them)."""
        with self._lock:
            self._cached = None

    def read(self, subscriptions: Sequence[str]) -> BacklogReport:
        """The backlog of these subscriptions (short names), at most CACHE_SECONDS old."""
        key = tuple(subscriptions)
        with self._lock:
            cached = self._cached
            if cached and cached[1] == key and self._clock() - cached[0] < CACHE_SECONDS:
                return cached[2]
        report = self._read(key)
        with self._lock:
            self._cached = (self._clock(), key, report)
        return report

    def _read(self, subscriptions: tuple[str, ...]) -> BacklogReport:
        source = self.source
        if source == "unavailable":
            return BacklogReport(
                False,
                source,
                "not available from this emulator: Google's Pub/Sub emulator reports no "
                "metrics (the pure-Python one does: TASKCTL_PUBSUB_EMULATOR=python)",
            )
        found = {name: {} for name in subscriptions}
        try:
            for metric, key in ((UNDELIVERED, "undelivered"), (OLDEST_UNACKED, "oldest")):
                for name, value, measured in self._series(metric, subscriptions):
                    if name in found:
                        found[name][key] = value
                        found[name]["at"] = max(measured, found[name].get("at", measured))
        except (
            requests.RequestException,
            google.auth.exceptions.GoogleAuthError,
            ValueError,
            KeyError,
        ) as exc:
            return BacklogReport(False, source, _failure(exc))
        detail = (
            "Cloud Monitoring (sampled every 60 s; points can be minutes late)"
            if source == "cloud_monitoring"
            else "the Pub/Sub emulator's exact count, served as Cloud Monitoring serves it"
        )
        return BacklogReport(
            True,
            source,
            detail,
            {
                name: SubscriptionBacklog(v.get("undelivered"), v.get("oldest"), v.get("at"))
                for name, v in found.items()
            },
        )

    def _series(self, metric: str, subscriptions: tuple[str, ...]):
        """(subscription, newest value, its time) of each series of metric."""
        quoted = ", ".join(f'"{name}"' for name in subscriptions)
        now = datetime.now(UTC)
        response = self._http().get(
            f"{self._base_url()}/v3/projects/{self.settings.project_id}/timeSeries",
            params={
                "filter": f'metric.type = "{metric}" AND resource.type = "pubsub_subscription" '
                f"AND resource.labels.subscription_id = one_of({quoted})",
                "interval.startTime": _rfc3339(now - LOOKBACK),
                "interval.endTime": _rfc3339(now),
                "view": "FULL",
            },
            timeout=TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        for series in response.json().get("timeSeries", []):
            points = series.get("points") or []
            if not points:
                continue
            newest = points[0]  # the API lists a series' points newest first
            value = newest["value"]
            number = value.get("int64Value", value.get("doubleValue"))
            measured = datetime.fromisoformat(newest["interval"]["endTime"].replace("Z", "+00:00"))
            yield series["resource"]["labels"]["subscription_id"], int(number), measured

    def _base_url(self) -> str:
        host = self.settings.monitoring_emulator_host
        if not host:
            return MONITORING_URL
        return host if host.startswith("http") else f"http://{host}"

    def _http(self) -> requests.Session:
        if self._session is None:
            if self.source == "emulator":
                self._session = requests.Session()
            else:
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials, _ = google.auth.default(scopes=[MONITORING_READ_SCOPE])
                self._session = AuthorizedSession(credentials)
        return self._session


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _failure(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None and response.status_code == 403:
        return (
            "Cloud Monitoring refused the read (403): the API's service account needs "
            "monitoring.timeSeries.list (infra/iam.tf grants it)"
        )
    return f"Cloud Monitoring could not be read: {type(exc).__name__}: {exc}"[:300]


def queue_subscriptions(settings: Settings, queues: Sequence[str]) -> dict[str, str]:
    """Each queue's subscription (short name), the default queue first."""
    from taskcore.settings import DEFAULT_QUEUE

    ordered = [DEFAULT_QUEUE, *sorted(set(queues) - {DEFAULT_QUEUE})]
    return {queue: settings.subscription_name_for(queue) for queue in ordered}
