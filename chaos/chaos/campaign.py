"""The fault campaign: the whole pipeline under seeded faults, then the checker's verdict.

    outcome = run_campaign(CampaignConfig(seed=7, tasks=300, faults=40, emulator="python"))
    outcome.result.violations     # [] when every promise held
    print(report_text(outcome))

One campaign:

1. starts both emulators (or uses the given ones), a FaultProxy process in front of each,
   creates the topic, subscriptions and bucket, starts the API (`python -m taskctl api`) on
   the proxies, with TASK_MODULES naming example_tasks and chaos.tasks, and uploads the
   file_processing inputs through it (POST /uploads);
2. starts 1-3 worker executions at a time on the proxies (ExecutionRunner, restarted like
   a scheduler would), the record watcher, and the FaultInjector playing a seeded schedule
   of at least `faults` proxy faults (0.5-30 s), process faults and operator actions;
3. submits tasks through the API at a steady rate until `tasks` were accepted;
4. stops the faults and drains: waits (up to `drain_timeout`) until every task has ended;
5. lets the executions exit, stops the API, reads the evidence (records, DLQ, outputs)
   straight from the emulators, stops everything else, checks that every process it
   started is gone, and runs the checker.

Every process is stopped on every path out, errors included.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from chaos import evidence as gather
from chaos.checker import CheckResult, check
from chaos.dossier import write_dossiers
from chaos.drain import Drain, DrainResult
from chaos.executions import ExecutionRecord
from chaos.faults import (
    OPERATOR_TARGET,
    PROXY_TARGETS,
    WORKER_TARGET,
    FaultInjector,
    FaultSchedule,
    KindTally,
    OperatorAction,
    Outcome,
    PlannedFault,
    ScheduleConfig,
    build_schedule,
)
from chaos.ledger import Ledger
from chaos.operations import CampaignOperator
from chaos.processes import ExecutionRunner, ProcessFault
from chaos.proxy import ProxyFault
from chaos.proxy_process import ProxyProcess
from chaos.stack import TASK_MODULES, ApiServer, campaign_settings, groups_alive
from chaos.submitter import Submitter
from chaos.watcher import RecordWatcher
from chaos.workload import INPUT_FILES, draw_task, mix_with
from devstack.emulators import start_gcs_emulator, start_pubsub_emulator
from devstack.emulators.process import temporary_env
from taskcore.bootstrap import bootstrap
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client
from taskcore.status import StatusStore
from taskcore.tasks import load_task_modules

log = logging.getLogger(__name__)

DEFAULT_RATE = 14.0
# Planned faults over the target: process faults find no execution now and then, and an
# operator action nothing to act on; those are reported as skipped.
PLAN_MARGIN = 1.15
# Executions may take this long from their last work (or SIGTERM) to exit: above a 30 s
# blackhole holding their last writes, plus idle time and the shutdown grace.
EXIT_BOUND_SECONDS = 90.0
# Of the target, operator actions make this share (the rest is process faults).
OPERATOR_SHARE = 0.25


@dataclass(frozen=True)
class CampaignConfig:
    """One campaign's parameters; `duration` (seconds of submissions and faults) defaults to
    tasks / rate."""

    seed: int
    tasks: int
    faults: int
    emulator: str = "python"
    duration: float | None = None
    rate: float = DEFAULT_RATE
    parallelism: int = 3
    memory_hog_weight: float = 0.0
    drain_timeout: float = 600.0
    log_dir: Path | None = None
    watch_reads_per_second: float = 20.0
    exit_bound_seconds: float = EXIT_BOUND_SECONDS
    execution_memory_mb: int | None = None
    settings_overrides: dict = field(default_factory=dict)

    @property
    def submit_seconds(self) -> float:
        return self.duration if self.duration else self.tasks / self.rate

    @property
    def submit_rate(self) -> float:
        return self.tasks / self.duration if self.duration else self.rate


@dataclass
class CampaignOutcome:
    """What a campaign did and what the checker found; the report is made from it."""

    config: CampaignConfig
    emulator: str
    ledger: Ledger
    schedule: FaultSchedule
    faults: dict[str, KindTally]
    executions: list[ExecutionRecord]
    drain: DrainResult
    result: CheckResult
    timings: dict[str, float]
    records_read: int = 0
    dead_letters_read: int = 0
    outputs_read: int = 0
    watcher_reads: int = 0
    submissions_sent: int = 0
    log_dir: Path | None = None
    dossiers: list[Path] = field(default_factory=list)
    # Injections that raised: what was planned, and the error.
    fault_failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Emulators:
    """Emulators that already run: the Pub/Sub host:port, the GCS URL, and which Pub/Sub."""

    pubsub_host: str
    gcs_url: str
    kind: str


def plan_faults(seed: int, duration: float, target: int) -> FaultSchedule:
    """A schedule of at least target × PLAN_MARGIN faults over duration seconds.

    Proxy faults keep ScheduleConfig's ranges (0.5-30 s, quiet 2-20 s); operator actions
    make about OPERATOR_SHARE of the target, and process faults the rest. Every kind is in
    it at least once, however short the campaign.
    """
    wanted = int(target * PLAN_MARGIN + 0.999)
    proxy_only = ScheduleConfig(
        duration_seconds=duration, process_faults_per_minute=0, operator_actions_per_minute=0
    )
    proxy_count = len(build_schedule(seed, proxy_only).faults)
    minutes = duration / 60
    operator_per_minute = max(0.5, OPERATOR_SHARE * wanted / minutes)
    process_per_minute = max(0.5, (wanted - proxy_count) / minutes - operator_per_minute)
    while True:
        config = replace(
            proxy_only,
            process_faults_per_minute=process_per_minute,
            operator_actions_per_minute=operator_per_minute,
        )
        schedule = with_every_kind(build_schedule(seed, config))
        if len(schedule.faults) >= wanted:
            return schedule
        process_per_minute *= 1.1


def with_every_kind(schedule: FaultSchedule) -> FaultSchedule:
    """The schedule plus one fault of each kind it lacks, at seeded moments in its middle."""
    rng = random.Random(f"{schedule.seed}:every-kind")
    have = set(schedule.by_kind())
    end = schedule.config.duration_seconds
    added = []
    for kind in (*ProxyFault, *ProcessFault, *OperatorAction):
        if str(kind) in have:
            continue
        at = rng.uniform(0.3 * end, 0.7 * end)
        if isinstance(kind, ProxyFault):
            target = rng.choice(PROXY_TARGETS)
            duration = 0.0 if kind is ProxyFault.RESET else min(rng.uniform(1.0, 5.0), end - at)
            delays = (0.2, 0.2) if kind is ProxyFault.DELAY else (0.0, 0.0)
            added.append(PlannedFault(at, target, kind, duration, *delays))
        else:
            target = WORKER_TARGET if isinstance(kind, ProcessFault) else OPERATOR_TARGET
            added.append(PlannedFault(at, target, kind, choice=rng.getrandbits(32) or 1))
    faults = tuple(sorted((*schedule.faults, *added)))
    return FaultSchedule(seed=schedule.seed, config=schedule.config, faults=faults)


def upload_inputs(api_url: str) -> None:
    """Upload the objects file_processing tasks read through POST /uploads (before any fault)."""
    for name, data in INPUT_FILES.items():
        response = requests.post(
            f"{api_url}/uploads",
            files={"file": (name, data)},
            data={"name": name},
            # What a script sends and an HTML form cannot (keys are off in the campaign).
            headers={"X-Requested-With": "chaos"},
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"upload of {name} answered {response.status_code}: {response.text}")


def _recent_picker(ledger: Ledger):
    """The watcher's choice: mostly recent tasks (likely in flight), sometimes any."""

    def pick(rng: random.Random) -> str | None:
        tracked = ledger.accepted_ids()
        if not tracked:
            return None
        pool = tracked[-200:] if rng.random() < 0.7 else tracked
        return rng.choice(pool)

    return pick


@contextlib.contextmanager
def _emulators(config: CampaignConfig, given: Emulators | None, log_dir: Path, groups: dict):
    if given is not None:
        yield given
        return
    with (
        start_pubsub_emulator(
            choice=config.emulator, log_path=str(log_dir / "pubsub-emulator.log")
        ) as pubsub,
        start_gcs_emulator(log_path=str(log_dir / "gcs-emulator.log")) as gcs,
    ):
        groups["pubsub emulator"] = pubsub.proc.pid
        groups["gcs emulator"] = gcs.proc.pid
        yield Emulators(pubsub.env_value, gcs.env_value, pubsub.kind)


def run_campaign(config: CampaignConfig, emulators: Emulators | None = None) -> CampaignOutcome:
    """Run one campaign (see the module docstring) and check it."""
    started = time.monotonic()
    log_dir = config.log_dir or Path(".cache/chaos") / f"{config.emulator}-seed{config.seed}"
    log_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, int] = {}
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        hosts = stack.enter_context(_emulators(config, emulators, log_dir, groups))
        direct = campaign_settings(
            config.seed, hosts.pubsub_host, hosts.gcs_url, **config.settings_overrides
        )
        # This process's own clients (watcher, operator, drain, evidence) go straight there.
        stack.enter_context(temporary_env("PUBSUB_EMULATOR_HOST", hosts.pubsub_host))
        stack.enter_context(temporary_env("STORAGE_EMULATOR_HOST", hosts.gcs_url))
        bootstrap(direct)
        bucket = make_bucket(direct, storage_client(direct))
        proxies = {}
        for name, upstream in (("pubsub", hosts.pubsub_host), ("gcs", hosts.gcs_url)):
            proxies[name] = stack.enter_context(ProxyProcess(upstream, name=name))
            groups[f"{name} proxy"] = proxies[name].pid
        proxied = direct.replace(
            pubsub_emulator_host=proxies["pubsub"].address,
            storage_emulator_host=proxies["gcs"].url,
        )
        api = ApiServer.start(proxied, log_dir)
        stack.callback(api.stop)
        groups["api"] = api.proc.pid
        upload_inputs(api.url)
        timings["start"] = time.monotonic() - started

        ledger = Ledger(direct.max_delivery_attempts)
        schedule = plan_faults(config.seed, config.submit_seconds, config.faults)
        (log_dir / "schedule.txt").write_text(schedule.describe() + "\n")
        watcher = stack.enter_context(
            RecordWatcher(
                StatusStore(bucket),
                _recent_picker(ledger),
                seed=config.seed,
                reads_per_second=config.watch_reads_per_second,
                started=started,
            )
        )
        memory_limit = (
            config.execution_memory_mb * 1024 * 1024 if config.execution_memory_mb else None
        )
        runner = stack.enter_context(
            ExecutionRunner(
                proxied,
                parallelism=config.parallelism,
                seed=config.seed,
                exit_bound_seconds=config.exit_bound_seconds,
                memory_limit_bytes=memory_limit,
                log_dir=log_dir / "executions",
            )
        )
        operator = CampaignOperator(
            direct, ledger, load_task_modules(TASK_MODULES), started=started
        )
        stack.callback(operator.close)
        mix = mix_with(config.memory_hog_weight)
        submitter = Submitter(
            api.url,
            lambda index: draw_task(config.seed, index, mix),
            ledger,
            target=config.tasks,
            rate=config.submit_rate,
            started=started,
        )
        injector = stack.enter_context(
            FaultInjector(schedule, proxies=proxies, runner=runner, operator=operator)
        )
        stop = threading.Event()
        phase = time.monotonic()
        try:
            submitter.run(stop)
        finally:
            stop.set()
        injector.join()
        injector.stop()  # every proxy fault cleared
        timings["submit_and_faults"] = time.monotonic() - phase

        phase = time.monotonic()
        drained = Drain(ledger, bucket).wait(config.drain_timeout)
        timings["drain"] = time.monotonic() - phase
        phase = time.monotonic()
        runner.finish(timeout=config.exit_bound_seconds)
        runner.stop()
        watcher.stop()
        api.stop()
        timings["stop"] = time.monotonic() - phase

        phase = time.monotonic()
        executions = runner.records()
        evidence = gather.collect(
            direct,
            bucket,
            max_failures=direct.max_delivery_attempts,
            exit_bound_seconds=config.exit_bound_seconds,
            tracked=ledger.tracked(),
            unaccepted=ledger.unaccepted(),
            first_outputs=watcher.first_outputs(),
            last_sightings=watcher.last_sightings(),
            watcher_violations=watcher.violations(),
            executions=executions,
        )
        timings["evidence"] = time.monotonic() - phase
    # Everything is stopped now: none of it may still run.
    for record in executions:
        groups[f"execution {record.name}"] = record.pid
    evidence.leftover_processes = groups_alive(groups)
    phase = time.monotonic()
    result = check(evidence)
    dossiers = write_dossiers(log_dir, evidence, ledger, result.violations)
    timings["check"] = time.monotonic() - phase
    timings["total"] = time.monotonic() - started
    return CampaignOutcome(
        config=config,
        emulator=hosts.kind,
        ledger=ledger,
        schedule=schedule,
        faults=injector.report(),
        executions=executions,
        drain=drained,
        result=result,
        timings=timings,
        records_read=len(evidence.records),
        dead_letters_read=len(evidence.dead_letters),
        outputs_read=len(evidence.outputs),
        watcher_reads=watcher.reads,
        submissions_sent=submitter.sent,
        log_dir=log_dir,
        dossiers=dossiers,
        fault_failures=[
            f"{i.planned.describe().strip()}: {i.detail}"
            for i in injector.injections()
            if i.outcome is Outcome.FAILED
        ],
    )
