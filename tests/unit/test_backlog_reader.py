"""Reading the backlog from Cloud Monitoring's answer (no network: a recorded-shape session)."""

from __future__ import annotations

import requests

from taskcore.backlog import MONITORING_URL, OLDEST_UNACKED, UNDELIVERED, BacklogReader
from taskcore.settings import Settings

PRODUCTION = Settings(project_id="prod-project")


class FakeResponse:
    def __init__(self, body: dict, status: int = 200) -> None:
        self.body, self.status_code = body, status

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code}", response=self)

    def json(self) -> dict:
        return self.body


class FakeSession:
    """Answers timeSeries.list as Cloud Monitoring does (points newest first)."""

    def __init__(self, values: dict[str, dict[str, int]], status: int = 200) -> None:
        self.values, self.status, self.calls = values, status, []

    def get(self, url, params, timeout):
        self.calls.append((url, params))
        metric = next(m for m in (UNDELIVERED, OLDEST_UNACKED) if m in params["filter"])
        series = [
            {
                "resource": {"labels": {"subscription_id": name}},
                "points": [
                    {"interval": {"endTime": "2026-03-01T12:04:00Z"}, "value": {"int64Value": v}},
                    {"interval": {"endTime": "2026-03-01T12:03:00Z"}, "value": {"int64Value": "0"}},
                ],
            }
            for name, v in self.values.get(metric, {}).items()
        ]
        return FakeResponse({"timeSeries": series} if series else {}, self.status)


def test_production_reads_both_metrics_for_the_subscriptions_asked_newest_point_first():
    session = FakeSession({UNDELIVERED: {"work": "42", "dlq": "3"}, OLDEST_UNACKED: {"work": "90"}})

    report = BacklogReader(PRODUCTION, session=session).read(["work", "dlq"])

    assert report.available and report.source == "cloud_monitoring"
    work = report.subscriptions["work"]
    assert (work.undelivered, work.oldest_unacked_seconds) == (42, 90)
    assert work.measured_at.isoformat() == "2026-03-01T12:04:00+00:00"
    assert report.subscriptions["dlq"].oldest_unacked_seconds is None, "no point: not a guess"
    url, params = session.calls[0]
    assert url == f"{MONITORING_URL}/v3/projects/prod-project/timeSeries"
    assert 'resource.labels.subscription_id = one_of("work", "dlq")' in params["filter"]
    assert params["interval.startTime"] < params["interval.endTime"]


def test_a_refused_read_says_which_permission_is_missing():
    session = FakeSession({}, status=403)

    report = BacklogReader(PRODUCTION, session=session).read(["work"])

    assert not report.available and "monitoring.timeSeries.list" in report.detail


def test_an_emulator_without_metrics_is_unavailable_and_nothing_is_asked():
    session = FakeSession({UNDELIVERED: {"work": "1"}})
    google = Settings(pubsub_emulator_host="127.0.0.1:8085")

    report = BacklogReader(google, session=session).read(["work"])

    assert not report.available and report.source == "unavailable"
    assert "not available from this emulator" in report.detail and not session.calls


def test_reads_are_cached_briefly_and_invalidated_by_a_change():
    now = [0.0]
    session = FakeSession({UNDELIVERED: {"work": "1"}})
    reader = BacklogReader(PRODUCTION, session=session, clock=lambda: now[0])

    reader.read(["work"])
    reader.read(["work"])
    now[0] = 10.0
    reader.read(["work"])
    reader.invalidate()
    reader.read(["work"])

    assert len(session.calls) == 3 * 2, "two metrics per read, three reads"
