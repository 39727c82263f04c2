"""The pieces together: real worker executions, started by the runner, through the proxies."""

from __future__ import annotations

import pytest

from chaos.processes import Ending, ExecutionRunner
from tests.integration.helpers import publish_tasks, status_of

pytestmark = pytest.mark.integration


def test_worker_executions_drain_through_the_proxies_and_exit_by_themselves(
    pipeline_settings, pubsub_proxy, gcs_proxy, tmp_path
):
    task_ids = publish_tasks(
        pipeline_settings, [("data_transformation", {"dataset_size": 5})] * 3
    )  # published past the proxies; the workers reach the emulators only through them
    proxied = pipeline_settings.replace(
        pubsub_emulator_host=pubsub_proxy.address, storage_emulator_host=gcs_proxy.url
    )

    with ExecutionRunner(
        proxied, parallelism=1, exit_bound_seconds=10.0, log_dir=tmp_path
    ) as runner:
        runner.wait_for_running(1)
        assert runner.finish(timeout=60)
    (record,) = runner.records()

    assert record.ended_by is Ending.SELF and record.returncode == 0, record.tail
    assert record.summary["processed"] == 3 and record.work_events == 3
    assert record.exited_within_bound is True
    assert (tmp_path / f"{record.name}.log").read_text().count("task_succeeded") == 3
    assert all(status_of(pipeline_settings, t).state == "succeeded" for t in task_ids)
    assert status_of(pipeline_settings, task_ids[0]).execution == record.name
    for proxy in (pubsub_proxy, gcs_proxy):
        assert proxy.stats().bytes_to_upstream > 0
