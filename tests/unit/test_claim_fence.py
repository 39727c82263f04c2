"""A run whose claim cannot be renewed is stopped before the claim runs out.

Another delivery may take a task over once its claim has run out, so a run that keeps going
past it runs the task in two places at once. The fence stops it at FENCE_AT of the claim,
even while a renewal hangs in its retries (the renewals' own thread is stuck then). The
run then stops at its next check of the context: ctx.sleep, ctx.check_alive or ctx.progress.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from background_worker.leases import FENCE_AT, ClaimedRun, ClaimKeeper
from taskcore.context import SUPERSEDED, RunContext, RunStopped
from taskcore.lifecycle import Delivery
from taskcore.memory_bucket import MemoryBucket
from taskcore.settings import Settings

CLAIM_SECONDS = 2.0


class StorageThatStopsAnswering:
    """Takes the first claim, then lets every later write fail or hang."""

    def __init__(self, later_writes: str) -> None:
        self.later_writes = later_writes  # "fail" or "hang"
        self.writes = 0
        self.unblock = threading.Event()

    def transition(self, task_id, change):
        self.writes += 1
        if self.writes == 1:
            return SimpleNamespace(refused=False, written=True)
        if self.later_writes == "hang":
            self.unblock.wait(30)
        raise ConnectionError("storage unreachable")

    def read(self, task_id):
        return None


def run_claimed_then_cut_off(later_writes: str):
    store = StorageThatStopsAnswering(later_writes)
    keeper = ClaimKeeper(store, claim_seconds=CLAIM_SECONDS)
    lost: list[tuple[float, str]] = []
    run = ClaimedRun(
        delivery=Delivery(task_id="t1", task_type="data_transformation", message_id="m1"),
        run_id="1-aa",
        execution="exec-a",
        claim_at=time.monotonic(),
        on_lost=lambda reason: lost.append((time.monotonic(), reason)),
    )
    keeper.start()
    try:
        keeper.watch(run)
        deadline = time.monotonic() + 10
        while not lost and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        store.unblock.set()
        keeper.stop()
    return run, lost


def test_a_run_whose_renewals_fail_is_stopped_before_its_claim_runs_out():
    run, lost = run_claimed_then_cut_off("fail")

    assert run.claimed and len(lost) == 1
    stopped_at, reason = lost[0]
    unrenewed = stopped_at - run.last_write
    assert CLAIM_SECONDS * FENCE_AT <= unrenewed < CLAIM_SECONDS, unrenewed
    assert reason.startswith("not renewed for")


def test_a_run_is_stopped_even_while_its_renewal_hangs():
    run, lost = run_claimed_then_cut_off("hang")

    assert len(lost) == 1, "the fence does not wait for the hanging renewal"
    stopped_at, _ = lost[0]
    assert stopped_at - run.last_write < CLAIM_SECONDS


def test_a_run_whose_renewals_land_is_never_fenced():
    class Answering:
        def transition(self, task_id, change):
            return SimpleNamespace(refused=False, written=True)

        def read(self, task_id):
            return None

    keeper = ClaimKeeper(Answering(), claim_seconds=CLAIM_SECONDS)
    lost: list[str] = []
    run = ClaimedRun(
        delivery=Delivery(task_id="t1", task_type="data_transformation", message_id="m1"),
        run_id="1-aa",
        execution="exec-a",
        claim_at=time.monotonic(),
        on_lost=lost.append,
    )
    keeper.start()
    try:
        keeper.watch(run)
        time.sleep(CLAIM_SECONDS * 2)  # renewed about six times meanwhile
    finally:
        keeper.stop()

    assert run.claimed and lost == []


def test_a_stopped_run_stops_at_its_next_progress_report():
    reported = []
    ctx = RunContext(
        settings=Settings.from_env({}),
        bucket=MemoryBucket("unit-bucket"),
        task_id="t1",
        run_id="1-aa",
        attempt=1,
        time_limit=60,
        on_progress=reported.append,
    )
    ctx.progress(0.25)
    ctx.stop(SUPERSEDED)

    with pytest.raises(RunStopped):
        ctx.progress(0.5)
    assert [p.fraction for p in reported] == [0.25]
