"""How tasks end: past the task timeout (SIGTERM, then SIGKILL after the grace), cancelled,
or because the stand-in stops or dies. No task process outlives any of these."""

from __future__ import annotations

import os
import signal
import time

import pytest
from google.api_core import exceptions

from tests.jobs.conftest import open_clients
from tests.jobs.standin_helpers import (
    STANDIN_MARK,
    TERM_GRACE,
    Reason,
    State,
    condition,
    create_job,
    execution_log,
    fake_job,
    kill_fake_task,
    process_gone,
    records,
    run,
    wait_for,
    wait_until_done,
)


def test_a_task_past_its_timeout_gets_sigterm_then_sigkill_after_the_grace(
    run_clients, parent, record_dir
):
    job = create_job(
        run_clients,
        parent,
        "stubborn",
        fake_job(record_dir, "--sleep", "30", "--ignore-sigterm", timeout_seconds=1.5),
    )

    done = wait_until_done(run_clients, run(run_clients, job.name).name)

    record = records(record_dir, done.name)[0, 0]
    started = done.start_time.timestamp()  # taken as the task was spawned
    assert 1.5 <= record["sigterm_at"] - started < 1.5 + 0.75
    assert "ended" not in record, "the SIGKILL cut its sleep short"
    assert process_gone(record["pid"])
    ran_for = done.completion_time.timestamp() - started
    assert 1.5 + TERM_GRACE <= ran_for < 1.5 + TERM_GRACE + 1.0
    assert done.failed_count == 1
    completed = condition(done, "Completed")
    assert completed.state == State.CONDITION_FAILED
    assert "timeout" in completed.message
    log = execution_log(done)
    assert "task timeout (1.5s) reached: SIGTERM" in log
    assert f"still running {TERM_GRACE:g}s after SIGTERM: SIGKILL" in log


def test_a_timed_out_attempt_is_a_failure_that_is_retried(run_clients, parent, record_dir):
    job = create_job(
        run_clients,
        parent,
        "slow",
        fake_job(record_dir, "--sleep", "30", timeout_seconds=0.5, max_retries=1),
    )

    done = wait_until_done(run_clients, run(run_clients, job.name).name)

    # (A loaded machine may not even have started Python in the half second: the stand-in's
    # log, not the task's record, is the witness.)
    log = execution_log(done)
    assert log.count("task timeout (0.5s) reached: SIGTERM") == 2
    assert "[task 0 attempt 1] " in log and "SIGKILL" not in log
    assert (done.failed_count, done.retried_count) == (1, 1)
    assert done.completion_time.timestamp() - done.start_time.timestamp() < TERM_GRACE + 1.5, (
        "a task that ends on SIGTERM does not wait for the grace"
    )


def test_cancel_stops_running_tasks_and_starts_no_more(run_clients, parent, record_dir):
    job = create_job(
        run_clients,
        parent,
        "cancelled",
        fake_job(record_dir, "--sleep", "30", task_count=3, parallelism=2),
    )
    started = run(run_clients, job.name)
    wait_for(lambda: len(records(record_dir, started.name)) == 2, what="two started tasks")

    operation = run_clients.executions.cancel_execution(name=started.name)
    done = operation.result(timeout=10)

    seen = records(record_dir, started.name)
    assert sorted(seen) == [(0, 0), (1, 0)], "the pending task never started"
    assert all("sigterm" in r and process_gone(r["pid"]) for r in seen.values())
    assert (done.cancelled_count, done.failed_count, done.succeeded_count) == (3, 0, 0)
    assert done.completion_time and not done.reconciling
    completed = condition(done, "Completed")
    assert (completed.state, completed.execution_reason) == (
        State.CONDITION_FAILED,
        Reason.CANCELLED,
    )
    with pytest.raises(exceptions.FailedPrecondition):
        run_clients.executions.cancel_execution(name=started.name)


def test_an_execution_that_is_being_cancelled_says_so(run_clients, parent, record_dir):
    job = create_job(
        run_clients, parent, "cancelling", fake_job(record_dir, "--sleep", "30", "--ignore-sigterm")
    )
    started = run(run_clients, job.name)
    wait_for(lambda: records(record_dir, started.name), what="the task's start")

    run_clients.executions.cancel_execution(name=started.name)
    stopping = wait_for(
        lambda: (
            (e := run_clients.executions.get_execution(name=started.name)).conditions
            and condition(e, "Completed").execution_reason == Reason.CANCELLING
            and e
        ),
        what="CANCELLING",
    )
    done = wait_until_done(run_clients, started.name)

    assert not stopping.completion_time and stopping.running_count == 1
    assert done.cancelled_count == 1 and condition(done, "Completed").execution_reason == (
        Reason.CANCELLED
    )


@pytest.fixture
def own_standin(artifacts_dir, tmp_path):
    """A stand-in of this test's own, which the test may stop or kill."""
    from devstack.emulators import start_jobs_standin

    standin = start_jobs_standin(
        log_path=str(artifacts_dir / "jobs-standin-own.log"),
        work_dir=str(tmp_path / "work"),
        term_grace=TERM_GRACE,
        env=STANDIN_MARK,
    )
    clients = open_clients(standin.env_value)
    task_pids: list[int] = []
    try:
        yield standin, clients, task_pids
    finally:
        clients.channel.close()
        standin.stop()
        # Should the stand-in have failed at its one job, its tasks still end with the test.
        for pid in task_pids:
            kill_fake_task(pid)


def _start_stubborn_tasks(clients, record_dir, count: int) -> tuple[str, list[int]]:
    """Run count tasks that ignore SIGTERM; the execution's name and the tasks' pids."""
    parent = "projects/test-project/locations/here"
    job = create_job(
        clients,
        parent,
        "stubborn",
        fake_job(record_dir, "--sleep", "60", "--ignore-sigterm", task_count=count),
    )
    execution = run(clients, job.name)
    seen = wait_for(
        lambda: len(r := records(record_dir, execution.name)) == count and r,
        what="every task's start",
    )
    return execution.name, [record["pid"] for record in seen.values()]


@pytest.mark.parametrize("how", ["handle", "ctrl-c"])
def test_stopping_the_standin_ends_every_task_process_it_started(own_standin, record_dir, how):
    standin, clients, pids = own_standin
    execution, started = _start_stubborn_tasks(clients, record_dir, 3)
    pids.extend(started)

    started = time.monotonic()
    if how == "handle":
        standin.stop()
    else:
        standin.proc.send_signal(signal.SIGINT)
        standin.proc.wait(timeout=TERM_GRACE + 5)
    stopped_in = time.monotonic() - started

    assert not standin.is_running()
    assert [pid for pid in pids if not process_gone(pid)] == []
    assert stopped_in < TERM_GRACE + 3, "SIGTERM, the grace, then SIGKILL: no longer"
    assert all("sigterm" in r for r in records(record_dir, execution).values())


def test_a_killed_standin_leaves_no_task_process_behind(own_standin, record_dir):
    standin, clients, pids = own_standin
    pids.extend(_start_stubborn_tasks(clients, record_dir, 2)[1])

    os.kill(standin.proc.pid, signal.SIGKILL)
    standin.proc.wait(timeout=5)

    wait_for(lambda: all(process_gone(pid) for pid in pids), timeout=5, what="the tasks' end")
