"""The seeded fault schedule and the injector that plays it."""

from __future__ import annotations

import random
import socket
from dataclasses import replace

import pytest

from chaos import faults as faults_module
from chaos.faults import (
    FaultInjector,
    OperatorAction,
    Outcome,
    ScheduleConfig,
    build_schedule,
)
from chaos.processes import ProcessFault
from chaos.proxy import FaultProxy, ProxyFault

HOUR = ScheduleConfig(duration_seconds=3600)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    first, again = build_schedule(7, HOUR), build_schedule(7, HOUR)
    other = build_schedule(8, HOUR)

    assert first.faults == again.faults
    assert first.describe() == again.describe()
    assert first.faults != other.faults


def test_every_kind_appears_with_durations_and_delays_in_their_ranges():
    schedule = build_schedule(1, HOUR)

    assert set(schedule.by_kind()) == {
        str(k) for k in (*ProxyFault, *ProcessFault, *OperatorAction)
    }
    for fault in schedule.faults:
        assert 0 <= fault.at < HOUR.duration_seconds
        if fault.kind in (ProxyFault.REFUSE, ProxyFault.BLACKHOLE, ProxyFault.DELAY):
            assert 0.5 <= fault.duration <= 30.0 or fault.at + fault.duration == 3600
        else:
            assert fault.duration == 0.0  # resets and process/operator faults are instants
        if fault.kind is ProxyFault.DELAY:
            assert 0.05 <= fault.delay_to_upstream <= 2.0 and 0.05 <= fault.delay_to_client <= 2.0
        if fault.target in ("worker", "operator"):
            assert fault.choice > 0


def test_proxy_faults_on_one_target_never_overlap_and_end_within_the_run():
    schedule = build_schedule(2, HOUR)

    for target in ("pubsub", "gcs"):
        faults = schedule.for_target(target)
        assert faults
        for earlier, later in zip(faults, faults[1:], strict=False):
            assert earlier.at + earlier.duration + 2.0 <= later.at + 1e-9  # a quiet gap between
        assert faults[-1].at + faults[-1].duration <= 3600


def test_rates_and_mix_shape_the_schedule():
    config = replace(
        HOUR,
        proxy_mix={"delay": 1},
        process_faults_per_minute=30,
        process_mix={"sigkill": 1},
        operator_actions_per_minute=0,
    )
    counts = build_schedule(3, config).by_kind()

    assert set(counts) == {"delay", "sigkill"}
    assert 30 * 60 * 0.9 < counts["sigkill"] < 30 * 60 * 1.1  # a Poisson process at 30/min


def test_changing_one_stream_leaves_the_others_draws_alone():
    base = build_schedule(4, HOUR)
    more_kills = build_schedule(4, replace(HOUR, process_faults_per_minute=20))

    assert base.for_target("pubsub") == more_kills.for_target("pubsub")
    assert base.for_target("operator") == more_kills.for_target("operator")
    assert base.for_target("worker") != more_kills.for_target("worker")


def test_a_config_with_an_unknown_kind_or_a_bad_range_is_refused():
    with pytest.raises(ValueError):
        ScheduleConfig(duration_seconds=10, proxy_mix={"unplug": 1})
    with pytest.raises(ValueError):
        ScheduleConfig(duration_seconds=10, proxy_fault_seconds=(5, 1))


class RecordingRunner:
    """Stands in for ExecutionRunner: one execution runs, the first fault finds none."""

    def __init__(self) -> None:
        self.calls = []

    def inject(self, fault, rng):
        self.calls.append((fault, rng.random()))
        if len(self.calls) == 1:
            return None
        return type("Record", (), {"name": f"exec-{len(self.calls)}"})()


class RecordingOperator:
    def __init__(self) -> None:
        self.picks = []

    def replay_in_flight(self, rng: random.Random):
        self.picks.append(("replay", rng.random()))
        return None  # no dead letter in flight

    def publish_duplicate(self, rng: random.Random):
        self.picks.append(("duplicate", rng.random()))
        return "task-1"


@pytest.fixture
def idle_upstream():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()


def short_config(**overrides) -> ScheduleConfig:
    values = dict(
        duration_seconds=1.5,
        proxy_fault_seconds=(0.1, 0.3),
        proxy_quiet_seconds=(0.05, 0.2),
        delay_seconds=(0.01, 0.02),
        process_faults_per_minute=240,
        operator_actions_per_minute=240,
    )
    values.update(overrides)
    return ScheduleConfig(**values)


def test_the_injector_plays_every_fault_and_reports_them_by_kind(idle_upstream):
    schedule = build_schedule(5, short_config())
    runner, operator = RecordingRunner(), RecordingOperator()
    with (
        FaultProxy(idle_upstream, name="pubsub") as pubsub,
        FaultProxy(idle_upstream, name="gcs") as gcs,
    ):
        injector = FaultInjector(
            schedule,
            proxies={"pubsub": pubsub, "gcs": gcs},
            runner=runner,
            operator=operator,
            operator_patience=0,  # this operator never has a dead letter to replay
        )
        with injector:
            assert injector.join(timeout=10)
        proxy_tallies = [proxy.stats().faults for proxy in (pubsub, gcs)]
        assert pubsub.active_faults() == set() and gcs.active_faults() == set()

    injections = injector.injections()
    report = injector.report()
    assert sorted(i.planned for i in injections) == sorted(schedule.faults)
    assert {kind: t.applied + t.skipped + t.failed for kind, t in report.items()} == dict(
        schedule.by_kind()
    )
    for kind in ProxyFault:
        applied = sum(tallies[kind].applied for tallies in proxy_tallies)
        assert report.get(str(kind), None) is None or report[kind].applied == applied
    first_process = next(i for i in injections if i.planned.target == "worker")
    assert first_process.outcome is Outcome.SKIPPED and first_process.detail
    replays = [i for i in injections if i.planned.kind is OperatorAction.REPLAY_IN_FLIGHT]
    assert replays and all(i.outcome is Outcome.SKIPPED for i in replays)
    assert "applied" in injector.report_text()


def test_the_picks_are_repeatable_from_the_seed():
    schedule = build_schedule(6, short_config(duration_seconds=0.5, proxy_targets=()))

    def play() -> list:
        runner, operator = RecordingRunner(), RecordingOperator()
        with FaultInjector(
            schedule, runner=runner, operator=operator, operator_patience=0
        ) as injector:
            injector.join(timeout=10)
        return sorted(runner.calls) + sorted(operator.picks)

    assert play() == play()


def test_faults_for_missing_targets_are_skipped_and_stop_cuts_the_play(idle_upstream):
    schedule = build_schedule(9, short_config(duration_seconds=600))
    with FaultProxy(idle_upstream, name="pubsub") as pubsub:
        injector = FaultInjector(schedule, proxies={"pubsub": pubsub}).start()
        injector.join(timeout=1.0)
        injector.stop()
        assert pubsub.active_faults() == set()

    played = injector.injections()
    assert 0 < len(played) < len(schedule.faults)
    assert all(i.outcome is Outcome.SKIPPED for i in played if i.planned.target != "pubsub")
    assert sum(t.seconds for t in injector.report().values()) <= 1.5


def test_an_operator_action_with_nothing_to_act_on_yet_waits_for_a_candidate(monkeypatch):
    monkeypatch.setattr(faults_module, "OPERATOR_RETRY_SECONDS", 0.05)

    class OperatorWhoseFirstDeadLetterComesLate(RecordingOperator):
        def __init__(self) -> None:
            super().__init__()
            self.tries = 0

        def replay_in_flight(self, rng: random.Random):
            self.tries += 1
            return "task-9" if self.tries > 3 else None

    schedule = build_schedule(6, short_config(duration_seconds=2.0, proxy_targets=()))
    operator = OperatorWhoseFirstDeadLetterComesLate()
    with FaultInjector(
        schedule, runner=RecordingRunner(), operator=operator, operator_patience=5
    ) as injector:
        assert injector.join(timeout=10)

    replays = [
        i for i in injector.injections() if i.planned.kind is OperatorAction.REPLAY_IN_FLIGHT
    ]
    assert replays and all(i.outcome is Outcome.APPLIED for i in replays)
    assert operator.tries == len(replays) + 3
