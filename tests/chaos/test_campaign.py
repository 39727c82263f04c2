"""A short seed of the fault campaign, on the emulators the suite uses: every kind of fault is
injected, every accepted task ends exactly once, and the checker finds nothing.

The long run is `make chaos` (10,000 tasks, 200+ faults, both Pub/Sub emulators).
"""

from __future__ import annotations

import psutil
import pytest

from chaos.campaign import CampaignConfig, Emulators, run_campaign
from chaos.executions import ProcessFault
from chaos.faults import OperatorAction
from chaos.proxy import ProxyFault
from chaos.report import report_text

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

SEED = 20260101


def test_a_short_seeded_campaign_ends_every_task_exactly_once_under_every_kind_of_fault(
    pubsub_emulator, gcs_emulator, artifacts_dir
):
    config = CampaignConfig(
        seed=SEED,
        tasks=200,
        faults=32,
        duration=30.0,
        drain_timeout=75.0,
        log_dir=artifacts_dir / f"chaos-seed{SEED}-{pubsub_emulator.kind}",
    )

    outcome = run_campaign(
        config,
        Emulators(pubsub_emulator.env_value, gcs_emulator.env_value, pubsub_emulator.kind),
    )

    report = report_text(outcome)
    print(report)
    assert outcome.result.violations == [], report
    assert outcome.drain.ended, report
    assert len(outcome.ledger.accepted_ids()) == 200, report
    every_kind = {str(kind) for kind in (*ProxyFault, *ProcessFault, *OperatorAction)}
    applied = {kind for kind, tally in outcome.faults.items() if tally.applied}
    assert applied == every_kind, report
    assert sum(t.applied for t in outcome.faults.values()) >= config.faults, report
    # Both ends of the promise were exercised: successes with outputs, and dead letters.
    assert outcome.result.outcomes["succeeded"] > 0, report
    assert outcome.result.outcomes["dead_lettered"] > 0, report


def test_a_campaign_that_fails_midway_leaves_no_process_behind(
    pubsub_emulator, gcs_emulator, tmp_path, monkeypatch
):
    from chaos import campaign as campaign_module

    real_draw = campaign_module.draw_task

    def draw_then_break(seed, index, mix=None):
        if index == 40:
            raise RuntimeError("the campaign breaks mid-submission")
        return real_draw(seed, index, mix)

    monkeypatch.setattr(campaign_module, "draw_task", draw_then_break)
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}

    with pytest.raises(RuntimeError, match="breaks mid-submission"):
        run_campaign(
            CampaignConfig(seed=3, tasks=100, faults=10, duration=10.0, log_dir=tmp_path),
            Emulators(pubsub_emulator.env_value, gcs_emulator.env_value, pubsub_emulator.kind),
        )

    left = [
        " ".join(child.cmdline())
        for child in me.children(recursive=True)
        if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE
    ]
    assert left == []
    # It got far enough to have started what it must stop: proxies, the API, executions.
    assert (tmp_path / "api.log").exists() and list((tmp_path / "executions").glob("*.log"))
