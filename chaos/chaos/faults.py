"""A seeded fault schedule for a campaign of D seconds: what to break, when, for how long.

    schedule = build_schedule(seed=42, config=ScheduleConfig(duration_seconds=300))
    print(schedule.describe())                  # the same lines for the same seed and config

Three streams, each drawn from its own `random.Random(f"{seed}:{stream}")`, so changing
one stream's settings leaves the others' draws as they were:

- proxy faults, one timeline per target ("pubsub", "gcs"): quiet gaps and faults in turn,
  kinds drawn from `proxy_mix`, durations from `proxy_fault_seconds` (0.5-30 s, clipped to
  the run; a reset is an instant), delays per direction from `delay_seconds`;
- process faults (SIGKILL, SIGTERM, memory-limit kill) at Poisson-random moments, each
  against one execution running at that moment;
- operator actions: replay a dead letter while its original is in flight, and publish a
  duplicate of an accepted task_id.

A fault that picks something (an execution, a task) carries `choice`, a number drawn with
the schedule, and the pick is made with `random.Random(choice)`: the same seed makes the
same picks among the same candidates.

`FaultInjector` plays a schedule against the proxies, the execution runner and the
campaign's operator, and reports what it injected by kind (`report()`, `report_text()`).
"""

from __future__ import annotations

import contextlib
import enum
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from chaos.processes import ExecutionRunner, ProcessFault
from chaos.proxy import FaultProxy, ProxyFault
from chaos.proxy_process import ProxyProcess

PROXY_TARGETS = ("pubsub", "gcs")
WORKER_TARGET = "worker"
OPERATOR_TARGET = "operator"
# An operator action with nothing to act on yet (no dead letter to replay, early in a run
# whose first executions were all killed) is tried again, by default this long, before it is
# reported skipped. Operator actions play on their own thread: only later ones wait for it.
OPERATOR_PATIENCE_SECONDS = 30.0
OPERATOR_RETRY_SECONDS = 1.0


class OperatorAction(enum.StrEnum):
    """Something an operator does that the pipeline must survive."""

    REPLAY_IN_FLIGHT = "replay_in_flight"  # replay a dead letter whose original is in flight
    PUBLISH_DUPLICATE = "publish_duplicate"  # publish an accepted task_id again


FaultKind = ProxyFault | ProcessFault | OperatorAction


def _mix(**weights: float) -> Mapping[str, float]:
    return field(default_factory=lambda: dict(weights))


@dataclass(frozen=True)
class ScheduleConfig:
    """How much of what to inject over a run; every range is (low, high) seconds."""

    duration_seconds: float
    proxy_targets: tuple[str, ...] = PROXY_TARGETS
    proxy_mix: Mapping[str, float] = _mix(refuse=1, blackhole=1, delay=2, reset=1)
    proxy_fault_seconds: tuple[float, float] = (0.5, 30.0)
    proxy_quiet_seconds: tuple[float, float] = (2.0, 20.0)
    delay_seconds: tuple[float, float] = (0.05, 2.0)
    process_faults_per_minute: float = 6.0
    process_mix: Mapping[str, float] = _mix(sigkill=2, sigterm=1, memory_limit=1)
    operator_actions_per_minute: float = 2.0
    operator_mix: Mapping[str, float] = _mix(replay_in_flight=1, publish_duplicate=1)

    def __post_init__(self) -> None:
        if self.duration_seconds <= 0:
            raise ValueError("duration_seconds must be positive")
        for name in ("proxy_fault_seconds", "proxy_quiet_seconds", "delay_seconds"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high")
        if self.proxy_quiet_seconds[1] <= 0:
            raise ValueError("proxy_quiet_seconds must allow some quiet time")
        for mix, kinds in (
            (self.proxy_mix, ProxyFault),
            (self.process_mix, ProcessFault),
            (self.operator_mix, OperatorAction),
        ):
            for kind, weight in mix.items():
                kinds(kind)  # ValueError for an unknown kind
                if weight < 0:
                    raise ValueError(f"weight of {kind} cannot be negative")


@dataclass(frozen=True, order=True)
class PlannedFault:
    """One fault of the schedule. `at` is seconds after the campaign starts (orders by it)."""

    at: float
    target: str
    kind: FaultKind
    duration: float = 0.0
    delay_to_upstream: float = 0.0
    delay_to_client: float = 0.0
    choice: int = 0

    def describe(self) -> str:
        text = f"{self.at:9.3f}s {self.target:<8} {self.kind}"
        if self.duration:
            text += f" for {self.duration:.3f}s"
        if self.kind is ProxyFault.DELAY:
            text += f" (+{self.delay_to_upstream:.3f}s up, +{self.delay_to_client:.3f}s down)"
        if self.choice:
            text += f" choice={self.choice}"
        return text


@dataclass(frozen=True)
class FaultSchedule:
    """The faults of one run, in time order."""

    seed: int
    config: ScheduleConfig
    faults: tuple[PlannedFault, ...]

    def by_kind(self) -> Counter:
        """How many faults of each kind the schedule holds."""
        return Counter(str(fault.kind) for fault in self.faults)

    def for_target(self, target: str) -> list[PlannedFault]:
        return [fault for fault in self.faults if fault.target == target]

    def describe(self) -> str:
        """One line per fault: the schedule as text (equal for equal seeds and configs)."""
        header = f"fault schedule: seed {self.seed}, {self.config.duration_seconds:g}s"
        return "\n".join([header, *(fault.describe() for fault in self.faults)])


def build_schedule(seed: int, config: ScheduleConfig) -> FaultSchedule:
    """The schedule for seed and config; the same arguments always give the same schedule."""
    faults: list[PlannedFault] = []
    for target in config.proxy_targets:
        faults += _proxy_timeline(random.Random(f"{seed}:proxy:{target}"), target, config)
    instants = (
        ("process", WORKER_TARGET, config.process_faults_per_minute, config.process_mix),
        ("operator", OPERATOR_TARGET, config.operator_actions_per_minute, config.operator_mix),
    )
    for stream, target, per_minute, mix in instants:
        rng = random.Random(f"{seed}:{stream}")
        faults += _poisson(rng, target, per_minute, mix, config.duration_seconds)
    faults.sort()
    return FaultSchedule(seed=seed, config=config, faults=tuple(faults))


def _pick_kind(rng: random.Random, mix: Mapping[str, float], kinds):
    # Sorted, so two equal mixes written in another order draw the same kinds.
    names = sorted(name for name, weight in mix.items() if weight > 0)
    if not names:
        return None
    return kinds(rng.choices(names, weights=[mix[n] for n in names])[0])


def _proxy_timeline(rng: random.Random, target: str, config: ScheduleConfig) -> list:
    """Quiet gap, fault, quiet gap, ... on one proxy; faults on one target never overlap."""
    faults, end = [], config.duration_seconds
    at = rng.uniform(*config.proxy_quiet_seconds)
    while at < end:
        kind = _pick_kind(rng, config.proxy_mix, ProxyFault)
        if kind is None:
            break
        duration = 0.0
        if kind is not ProxyFault.RESET:
            duration = min(rng.uniform(*config.proxy_fault_seconds), end - at)
        delays = (0.0, 0.0)
        if kind is ProxyFault.DELAY:
            delays = (rng.uniform(*config.delay_seconds), rng.uniform(*config.delay_seconds))
        faults.append(PlannedFault(at, target, kind, duration, *delays))
        at += duration + rng.uniform(*config.proxy_quiet_seconds)
    return faults


def _poisson(rng: random.Random, target: str, per_minute: float, mix, end: float) -> list:
    """Faults at the moments of a Poisson process of per_minute events a minute."""
    kinds = ProcessFault if target == WORKER_TARGET else OperatorAction
    faults = []
    if per_minute <= 0:
        return faults
    at = rng.expovariate(per_minute / 60.0)
    while at < end:
        kind = _pick_kind(rng, mix, kinds)
        if kind is None:
            break
        faults.append(PlannedFault(at, target, kind, choice=rng.getrandbits(32) or 1))
        at += rng.expovariate(per_minute / 60.0)
    return faults


# --- playing a schedule --------------------------------------------------------------------


class OperatorActions(Protocol):
    """The campaign's operator: it knows the accepted tasks and the dead letters.

    Each method acts on one candidate picked with rng and returns its task_id, or None when
    there is nothing to act on (the injection is then reported as skipped).
    """

    def replay_in_flight(self, rng: random.Random) -> str | None:
        """Replay a dead letter whose task is being processed again right now."""

    def publish_duplicate(self, rng: random.Random) -> str | None:
        """Publish another message with the task_id (and payload) of an accepted task."""


class Outcome(enum.StrEnum):
    """What became of one planned fault."""

    APPLIED = "applied"
    SKIPPED = "skipped"  # nothing to apply it to at that moment (no execution running, ...)
    FAILED = "failed"  # applying it raised; the error is in the detail


@dataclass(frozen=True)
class Injection:
    """One planned fault as it was played: when (seconds after start), outcome, on what."""

    planned: PlannedFault
    at: float
    outcome: Outcome
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class KindTally:
    """Injections of one kind, by outcome, and the seconds the applied ones held."""

    applied: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0


class FaultInjector:
    """Plays a schedule against proxies (by target name), a runner and an operator.

    Each target's faults are played in order on a thread of their own, so a slow operator
    action never delays a network fault. `stop()` (or leaving the `with` block) ends the
    play early and clears every proxy fault still holding.
    """

    def __init__(
        self,
        schedule: FaultSchedule,
        *,
        proxies: Mapping[str, FaultProxy | ProxyProcess] | None = None,
        runner: ExecutionRunner | None = None,
        operator: OperatorActions | None = None,
        operator_patience: float = OPERATOR_PATIENCE_SECONDS,
    ) -> None:
        self.schedule = schedule
        self.proxies = dict(proxies or {})
        self.runner = runner
        self.operator = operator
        self.operator_patience = operator_patience
        self._injections: list[Injection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at: float | None = None
        self._stopped_at: float | None = None

    def start(self) -> FaultInjector:
        """Start the clock: fault `at` seconds is played `at` seconds from now."""
        self._started_at = time.monotonic()
        for target in sorted({fault.target for fault in self.schedule.faults}):
            thread = threading.Thread(
                target=self._play,
                args=(self.schedule.for_target(target),),
                name=f"inject-{target}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every fault was played; True if done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        """Play nothing more and clear the proxies' faults."""
        self._stop.set()
        self.join(timeout=30)
        self._stopped_at = self._stopped_at or time.monotonic()
        for proxy in self.proxies.values():
            with contextlib.suppress(RuntimeError):
                proxy.clear()

    def __enter__(self) -> FaultInjector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def injections(self) -> list[Injection]:
        """Every fault played so far, in the order they were played."""
        with self._lock:
            return list(self._injections)

    def report(self) -> dict[str, KindTally]:
        """Faults by kind: applied, skipped, failed, and seconds held (cut at stop)."""
        end = (self._stopped_at or time.monotonic()) - (self._started_at or 0.0)
        totals: dict[str, list] = {}
        for injection in self.injections():
            row = totals.setdefault(str(injection.planned.kind), [0, 0, 0, 0.0])
            row[list(Outcome).index(injection.outcome)] += 1
            if injection.outcome is Outcome.APPLIED:
                row[3] += min(injection.seconds, max(0.0, end - injection.at))
        return {kind: KindTally(*row) for kind, row in sorted(totals.items())}

    def report_text(self) -> str:
        """The report as a table, for the closing figures."""
        lines = [f"{'fault':<18} {'applied':>7} {'skipped':>7} {'failed':>6} {'seconds':>8}"]
        for kind, tally in self.report().items():
            lines.append(
                f"{kind:<18} {tally.applied:>7} {tally.skipped:>7} {tally.failed:>6} "
                f"{tally.seconds:>8.1f}"
            )
        return "\n".join(lines)

    def _play(self, faults: list[PlannedFault]) -> None:
        for fault in faults:
            if self._stop.wait(max(0.0, self._started_at + fault.at - time.monotonic())):
                return
            at = time.monotonic() - self._started_at
            try:
                outcome, detail = self._apply(fault)
            except Exception as exc:  # reported, and the play goes on
                outcome, detail = Outcome.FAILED, f"{type(exc).__name__}: {exc}"
            seconds = fault.duration if outcome is Outcome.APPLIED else 0.0
            with self._lock:
                self._injections.append(Injection(fault, at, outcome, detail, seconds))

    def _apply(self, fault: PlannedFault) -> tuple[Outcome, str]:
        rng = random.Random(fault.choice)
        if isinstance(fault.kind, ProxyFault):
            proxy = self.proxies.get(fault.target)
            if proxy is None:
                return Outcome.SKIPPED, f"no proxy named {fault.target}"
            return Outcome.APPLIED, self._apply_proxy(proxy, fault)
        if isinstance(fault.kind, ProcessFault):
            if self.runner is None:
                return Outcome.SKIPPED, "no execution runner"
            record = self.runner.inject(fault.kind, rng)
            if record is None:
                return Outcome.SKIPPED, "no execution running"
            return Outcome.APPLIED, record.name
        if self.operator is None:
            return Outcome.SKIPPED, "no operator"
        act = (
            self.operator.replay_in_flight
            if fault.kind is OperatorAction.REPLAY_IN_FLIGHT
            else self.operator.publish_duplicate
        )
        give_up = time.monotonic() + self.operator_patience
        while not (task_id := act(rng)):
            if time.monotonic() >= give_up or self._stop.wait(OPERATOR_RETRY_SECONDS):
                return Outcome.SKIPPED, "no candidate task"
        return Outcome.APPLIED, task_id

    @staticmethod
    def _apply_proxy(proxy: FaultProxy | ProxyProcess, fault: PlannedFault) -> str:
        if fault.kind is ProxyFault.REFUSE:
            proxy.refuse(fault.duration)
        elif fault.kind is ProxyFault.BLACKHOLE:
            proxy.blackhole(fault.duration)
        elif fault.kind is ProxyFault.DELAY:
            proxy.delay(fault.delay_to_upstream, fault.delay_to_client, duration=fault.duration)
        else:
            return f"{proxy.reset()} connections reset"
        return proxy.name
