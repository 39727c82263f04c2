"""ExecutionRunner: slots and restarts, faults by signal and memory limit, records, clean-up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.memory import memory_control
from chaos.processes import Ending, ExecutionRunner, ProcessFault
from tests.chaos.waiting import wait_until
from tests.conftest import make_test_settings

FAKE = [sys.executable, str(Path(__file__).with_name("fake_execution.py"))]
MIB = 1024 * 1024


def cgroups_available() -> bool:
    try:
        memory_control("cgroup").close()
    except OSError:
        return False
    return True


MEMORY_CONTROLS = [
    pytest.param(
        "cgroup",
        marks=pytest.mark.skipif(not cgroups_available(), reason="no writable memory cgroup"),
    ),
    "rss",
]


def runner(*mode: str, **options) -> ExecutionRunner:
    options.setdefault("restart_delay", (0.0, 0.05))
    options.setdefault("stop_grace_seconds", 2.0)
    return ExecutionRunner(make_test_settings(), command=[*FAKE, *mode], **options)


def ended(the_runner: ExecutionRunner, count: int) -> list:
    wait_until(
        lambda: sum(not r.running for r in the_runner.records()) >= count,
        f"{count} executions to end",
    )
    return [r for r in the_runner.records() if not r.running]


def assert_gone(pids) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def most_at_once(records) -> int:
    moments = sorted(
        [(r.started_at, 1) for r in records] + [(r.ended_at, -1) for r in records if r.ended_at]
    )
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    return peak


def test_executions_run_in_slots_and_start_again_as_they_end():
    with runner("work", "1", "0.1", parallelism=2, seed=3) as the_runner:
        done = ended(the_runner, 6)
    records = the_runner.records()

    assert most_at_once(records) == 2
    assert len({r.name for r in records}) == len(records)
    for record in done:
        assert record.ended_by is Ending.SELF and record.exited_by_itself
        assert record.returncode == 0 and record.signal is None
        assert record.work_events == 1 and record.exited_within_bound is True
        assert record.summary["cloud_run_execution"] == record.name  # its own name, in its env


def test_executions_get_the_settings_environment_and_none_of_the_runners(monkeypatch):
    monkeypatch.setenv("TOPIC_NAME", "the-runner's-own-topic")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
    settings = make_test_settings(pubsub_emulator_host=None)
    the_runner = ExecutionRunner(settings, command=[*FAKE, "work", "0", "0"], parallelism=1)
    with the_runner:
        (record, *_) = ended(the_runner, 1)

    assert record.summary["env"] == {
        "TOPIC_NAME": settings.topic_name,
        "PUBSUB_EMULATOR_HOST": None,
    }


def test_sigkill_and_sigterm_end_executions_and_are_recorded_as_ours():
    with runner("stay", parallelism=1) as the_runner:
        (first,) = the_runner.wait_for_running(1)
        wait_until(lambda: the_runner.records()[0].work_events, "the execution to start")
        assert the_runner.inject(ProcessFault.SIGKILL).name == first
        (second,) = ended(the_runner, 1) and the_runner.wait_for_running(1)
        assert second != first
        # Its SIGTERM handler is in place once it has logged.
        wait_until(lambda: the_runner.records()[1].work_events, "the second to start")
        assert the_runner.inject("sigterm", target=second).name == second
        records = ended(the_runner, 2)

    killed, terminated = records[:2]
    assert killed.ended_by is Ending.SIGKILL and killed.signal == "SIGKILL"
    assert not killed.exited_by_itself and killed.exited_within_bound is None
    assert terminated.ended_by is Ending.SIGTERM and terminated.returncode == 0
    assert terminated.exited_within_bound is True  # it exited right after our SIGTERM
    assert [fault for fault, _ in killed.faults] == [ProcessFault.SIGKILL]


def test_a_fault_with_no_execution_running_is_not_applied():
    the_runner = runner("stay", parallelism=1)
    assert the_runner.inject(ProcessFault.SIGKILL) is None


def test_an_execution_that_outstays_its_bound_is_stopped_with_sigkill_and_flagged():
    the_runner = runner("stubborn", parallelism=2, exit_bound_seconds=0.0, stop_grace_seconds=0.3)
    with the_runner:
        the_runner.wait_for_running(2)
        assert not the_runner.finish(timeout=0.2)  # they would never exit by themselves
    records = the_runner.records()

    assert [r.ended_by for r in records] == [Ending.RUNNER_STOP] * 2
    assert {r.signal for r in records} == {"SIGKILL"}  # SIGTERM ignored, then killed
    assert [r.exited_within_bound for r in records] == [False, False]
    assert_gone(r.pid for r in records)


def test_every_process_is_gone_when_the_with_block_fails():
    with pytest.raises(RuntimeError, match="campaign failed"), runner("stay", parallelism=3) as r:
        r.wait_for_running(3)
        raise RuntimeError("campaign failed")

    records = r.records()
    assert len(records) == 3 and not any(record.running for record in records)
    assert_gone(record.pid for record in records)
    assert r.running() == []


@pytest.mark.parametrize("control", MEMORY_CONTROLS)
def test_a_memory_limit_fault_kills_the_execution_as_it_next_grows(control):
    with runner("hog", "30", "0.01", parallelism=1, memory=control) as the_runner:
        the_runner.wait_for_running(1)
        wait_until(lambda: the_runner.records()[0].work_events, "30 MiB allocated")
        record = the_runner.inject(ProcessFault.MEMORY_LIMIT)
        (killed, *_) = ended(the_runner, 1)
        mechanism = the_runner.memory.mechanism

    assert record is not None and killed.name == record.name
    assert killed.ended_by is Ending.MEMORY_LIMIT and killed.oom_killed
    assert killed.signal == "SIGKILL"
    assert mechanism == killed.memory_mechanism
    assert mechanism.startswith("cgroup") if control == "cgroup" else mechanism == "rss-watchdog"
    assert 30 * MIB < killed.memory_limit_bytes < 80 * MIB


@pytest.mark.parametrize("control", MEMORY_CONTROLS)
def test_a_standing_memory_limit_kills_an_execution_that_outgrows_it(control):
    options = dict(parallelism=1, memory=control, memory_limit_bytes=60 * MIB)
    with runner("hog", "10", "0.002", **options) as the_runner:
        (killed, *_) = ended(the_runner, 1)
        group = getattr(the_runner.memory, "group", None)

    assert killed.ended_by is Ending.MEMORY_LIMIT and killed.oom_killed
    assert killed.memory_limit_bytes == 60 * MIB
    assert group is None or not group.exists()  # its cgroups are removed at stop


@pytest.mark.skipif(not cgroups_available(), reason="no writable memory cgroup")
def test_a_second_higher_memory_limit_on_one_execution_takes_effect():
    # Two memory-limit faults on one execution: the second limit is above the first.
    control = memory_control("cgroup")
    try:
        box = control.prepare("twice-limited")
        try:
            control.set_limit(box, 64 * MIB)
            control.set_limit(box, 128 * MIB)
            control.set_limit(box, 96 * MIB)
            limit = int((box.cgroup / control.layout.limit_file).read_text())
        finally:
            control.release(box)
    finally:
        control.close()

    assert limit == 96 * MIB


def test_cgroup_memory_refuses_to_start_without_cgroups_only_when_asked(monkeypatch):
    monkeypatch.setattr("chaos.memory.find_memory_cgroup", lambda *_: None)
    with pytest.raises(OSError):
        memory_control("cgroup")
    assert memory_control("auto").mechanism == "rss-watchdog"


ORPHANING_RUNNER = """
import sys, time
from chaos.processes import ExecutionRunner
runner = ExecutionRunner(command=sys.argv[1:], parallelism=1, memory="cgroup").start()
runner.wait_for_running(1)
while not runner.records()[0].work_events:
    time.sleep(0.01)
print(runner.records()[0].pid, runner.memory.group, flush=True)
time.sleep(60)  # killed here: its execution is left behind
"""


@pytest.mark.skipif(not cgroups_available(), reason="no writable memory cgroup")
def test_executions_left_by_a_killed_runner_are_swept_by_the_next_one():
    crashed = subprocess.Popen(
        [sys.executable, "-c", ORPHANING_RUNNER, *FAKE, "stay"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pid = None
    try:
        pid, group = crashed.stdout.readline().split()
        crashed.kill()
        crashed.wait(timeout=10)
        os.kill(int(pid), 0)  # still running, with nobody to stop it

        memory_control("cgroup").close()  # what the next runner does first

        wait_until(lambda: not Path(f"/proc/{pid}").exists(), "the orphan to be killed")
        assert not Path(group).exists()
    finally:
        crashed.kill()
        crashed.wait(timeout=10)
        if pid is not None:  # the sweep failed: do not leave the orphan running
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
