"""The dev stack's Cloud Run side: one worker job per queue in the Jobs stand-in, and the tick.

As `terraform apply` defines a Cloud Run job per queue and a Cloud Scheduler job that calls
POST /internal/tick, the dev stack defines the same jobs in the local stand-in
(`define_worker_jobs`) and ticks the API twice a second (`Ticker`). The API's dispatcher then
starts executions through the stand-in exactly as it does through Cloud Run: nothing runs
while the queues are empty, and a task starts within about a second of its submission.

The ticker also plays the scheduled safety-net run, but gently: first SAFETY_NET_SECONDS
after start, then every SAFETY_NET_SECONDS (Terraform's runs every 5 minutes).

Compose runs it as `python -m devstack.local_jobs --host 0.0.0.0 --port 8123 --tick-url ...`:
the stand-in, the job definitions and the ticker in one process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time

import grpc
import requests
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.cloud.run_v2.services.jobs.transports.grpc import JobsGrpcTransport
from google.protobuf import duration_pb2

from dispatcher.policy import queue_policies
from taskcore.settings import Settings
from taskcore.tasks import TaskRegistry

log = logging.getLogger(__name__)

# Twice a second: a delayed task is published within a second of its due time, whatever the
# tick's own duration.
TICK_SECONDS = 0.5
SAFETY_NET_SECONDS = 600.0
# Terraform's defaults (infra/variables.tf): the job's task timeout and its retries.
TASK_TIMEOUT_SECONDS = 900
MAX_RETRIES = 1


def jobs_client(host: str) -> run_v2.JobsClient:
    return run_v2.JobsClient(transport=JobsGrpcTransport(channel=grpc.insecure_channel(host)))


def define_worker_jobs(host: str, settings: Settings, registry: TaskRegistry) -> list[str]:
    """Create (or redefine) each queue's worker job in the stand-in at `host`; their names.

    A job's tasks run `taskctl worker` with QUEUE set, in the stand-in's environment (the
    emulator hosts and settings), as a Cloud Run job's containers get Terraform's env.
    """
    client = jobs_client(host)
    parent = f"projects/{settings.project_id}/locations/{settings.run_region}"
    names = []
    try:
        for queue, policy in queue_policies(settings, registry.queues()).items():
            job = run_v2.Job(
                template=run_v2.ExecutionTemplate(
                    task_count=1,
                    template=run_v2.TaskTemplate(
                        containers=[
                            run_v2.Container(
                                image="local/background-worker",
                                args=["taskctl", "worker"],
                                env=[run_v2.EnvVar(name="QUEUE", value=queue)],
                            )
                        ],
                        max_retries=MAX_RETRIES,
                        timeout=duration_pb2.Duration(seconds=TASK_TIMEOUT_SECONDS),
                    ),
                )
            )
            name = f"{parent}/jobs/{policy.job}"
            try:
                client.create_job(parent=parent, job=job, job_id=policy.job, timeout=10)
            except gexc.AlreadyExists:
                job.name = name
                client.update_job(job=job, timeout=10)
            names.append(name)
    finally:
        client.transport.close()
    return names


class Ticker:
    """POSTs the API's /internal/tick every TICK_SECONDS; runs each job now and then."""

    def __init__(
        self,
        tick_url: str,
        jobs_host: str | None = None,
        job_names: list[str] | None = None,
        *,
        interval: float = TICK_SECONDS,
        safety_net_seconds: float = SAFETY_NET_SECONDS,
    ) -> None:
        self.tick_url = tick_url
        self.jobs_host = jobs_host
        self.job_names = job_names or []
        self.interval = interval
        self.safety_net_seconds = safety_net_seconds
        self.ticks = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Ticker:
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        session = requests.Session()
        next_safety_net = time.monotonic() + self.safety_net_seconds
        failing_since = None
        while not self._stop.wait(self.interval):
            try:
                session.post(self.tick_url, timeout=10).raise_for_status()
                self.ticks += 1
                failing_since = None
            except requests.RequestException as exc:
                self.failures += 1
                # One line per outage, not one a second.
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("tick failed (retrying every %g s): %s", self.interval, exc)
            if self.jobs_host and time.monotonic() >= next_safety_net:
                next_safety_net = time.monotonic() + self.safety_net_seconds
                self._safety_net()
        session.close()

    def _safety_net(self) -> None:
        client = jobs_client(self.jobs_host)
        try:
            for name in self.job_names:
                client.run_job(name=name, timeout=10)
        except gexc.GoogleAPIError as exc:
            log.warning("safety-net run failed: %s", exc)
        finally:
            client.transport.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def main() -> None:
    """The stand-in, the queues' jobs and the ticker, in the foreground (compose)."""
    import click

    @click.command()
    @click.option("--host", default="127.0.0.1")
    @click.option("--port", type=int, default=8123)
    @click.option("--work-dir", default="/tmp/cloud-run-jobs")
    @click.option("--tick-url", required=True, help="The API's POST /internal/tick URL.")
    def run(host: str, port: int, work_dir: str, tick_url: str) -> None:
        from devstack.emulators import start_jobs_standin
        from taskcore.logs import configure_logging
        from taskcore.tasks import load_task_modules

        settings = Settings.from_env()
        configure_logging(settings.log_level)
        standin = start_jobs_standin(host=host, port=port, work_dir=work_dir)
        try:
            reach = f"127.0.0.1:{port}"
            names = define_worker_jobs(reach, settings, load_task_modules(settings.task_modules))
            ticker = Ticker(tick_url, reach, names).start()
            stopped = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stopped.set())
            with contextlib.suppress(KeyboardInterrupt):
                stopped.wait()
            ticker.stop()
        finally:
            standin.stop()

    run()


if __name__ == "__main__":
    main()
