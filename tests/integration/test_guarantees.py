"""Each guarantee against the fault that broke it, on the real emulators.

Every test here reproduces a defect found in the first release (issue 10) and fails on that
code: a long Pub/Sub blip that killed the ack thread, last-writer-wins status records, mixed
output sets, leases dropped while pull retried, outages that spent delivery attempts, data
errors retried five times, and records left `running` after Pub/Sub dead-lettered a task.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter

import pytest
from google.api_core import exceptions as gexc

from background_worker.worker import Worker, drain_subscription
from taskcore import lifecycle
from taskcore.errors import InfrastructureError, PermanentTaskError
from taskcore.lifecycle import Delivery
from taskcore.status import TaskState, utcnow
from tests.integration.dlq_helpers import seed_pubsub_dead_letter, status_store, taskctl
from tests.integration.helpers import (
    output_objects,
    outputs_of,
    publish_raw,
    publish_tasks,
    pull_all,
    status_of,
    upload,
)
from tests.integration.test_fault_injection import kill, start_fault_worker, wait_for
from tests.registries import builtin_registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Blip:
    """Makes chosen methods of one client raise `error` while it is on."""

    def __init__(self, client, *names: str, error=None) -> None:
        self.on = threading.Event()
        self.calls = Counter()
        self.error = error or gexc.RetryError("Timeout of 10.0s exceeded", cause=None)
        for name in names:
            real = getattr(client, name)

            def failing(*args, _real=real, _name=name, **kwargs):
                if self.on.is_set():
                    self.calls[_name] += 1
                    raise self.error
                return _real(*args, **kwargs)

            setattr(client, name, failing)

    def __enter__(self):
        self.on.set()
        return self

    def __exit__(self, *exc) -> None:
        self.on.clear()


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list]:
    """worker.run() on a thread; the list gets its summary, or the exception it raised."""
    results: list = []

    def target():
        try:
            results.append(worker.run())
        except Exception as exc:
            results.append(exc)
        finally:
            worker.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, results


def pulls_of(worker: Worker) -> list[str]:
    """The task ids this worker pulls, as it pulls them."""
    real, seen = worker.subscriber.pull, []

    def pull(*args, **kwargs):
        response = real(*args, **kwargs)
        seen.extend(m.message.attributes.get("task_id") for m in response.received_messages)
        return response

    worker.subscriber.pull = pull
    return seen


def counting(registry, task_type: str, runs: Counter, active: Counter | None = None):
    """The registry with task_type's handler counting runs (and concurrent runs) per task."""
    real = registry.get(task_type).handler
    lock = threading.Lock()

    def counted(ctx, payload):
        with lock:
            runs[ctx.task_id] += 1
            if active is not None:
                active[ctx.task_id] += 1
                active["max"] = max(active["max"], active[ctx.task_id])
        try:
            real(ctx, payload)
        finally:
            if active is not None:
                with lock:
                    active[ctx.task_id] -= 1

    return registry.with_handlers(**{task_type: counted})


# --- 1. settlement survives a Pub/Sub blip longer than the client's own retry --------------


def test_acks_lost_in_a_long_pubsub_blip_are_sent_once_it_passes(pipeline):
    task_ids = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})] * 10)
    runs = Counter()
    worker = Worker(
        pipeline.replace(idle_timeout_seconds=4),
        task_types=counting(builtin_registry(), "data_transformation", runs),
    )
    blip = Blip(worker.subscriber, "acknowledge")
    with blip:
        thread, results = run_in_thread(worker)
        wait_for(lambda: sum(runs.values()) == 10, 30, "every task to run")
        time.sleep(1.0)  # acks keep failing with RetryError meanwhile
    thread.join(60)

    assert blip.calls["acknowledge"] >= 2, "the acks did fail during the blip"
    (summary,) = results
    assert summary.outcomes["succeeded"] == 10
    assert worker.settler.acks_sent == 10, "sent once the blip passed"
    assert pull_all(pipeline, pipeline.subscription_path, wait=12) == [], "nothing redelivered"
    assert pull_all(pipeline, pipeline.dlq_subscription_path, wait=1) == []
    assert set(runs.values()) == {1}
    for task_id in task_ids:
        assert status_of(pipeline, task_id).state == TaskState.SUCCEEDED


def test_a_long_task_whose_lease_lapses_in_a_blip_never_runs_twice_at_once(pipeline):
    upload(pipeline, "long.txt", b"long\n")
    (task_id,) = publish_tasks(
        pipeline, [("file_processing", {"filename": "long.txt", "processing_time": 24})]
    )
    settings = pipeline.replace(max_processing_time_seconds=30, idle_timeout_seconds=3)
    runs, active = Counter(), Counter()
    registry = counting(builtin_registry(), "file_processing", runs, active)
    # The first execution takes this one message only: the redelivery can go nowhere but
    # to the second (else, on a loaded machine, the first's own stream may get it back).
    first = Worker(settings.replace(max_messages=1), task_types=registry)
    blip = Blip(first.subscriber, "modify_ack_deadline")
    thread, first_results = run_in_thread(first)
    wait_for(lambda: runs[task_id] == 1, 30, "the task to start")
    with blip:
        # No lease extension gets through for longer than the 10 s ack deadline: Pub/Sub
        # hands the message to the second execution while the first still runs the task.
        second = Worker(settings.replace(idle_timeout_seconds=20), task_types=registry)
        pulled = pulls_of(second)
        thread2, second_results = run_in_thread(second)
        wait_for(lambda: task_id in pulled, 40, "the redelivery to reach the second execution")
    thread.join(60)
    thread2.join(60)

    assert blip.calls["modify_ack_deadline"] >= 1
    assert runs[task_id] == 1 and active["max"] == 1, "the redelivery waited for the claim"
    assert first_results[0].outcomes["succeeded"] == 1
    assert second_results[0].outcomes["duplicate"] == 1, "then found the task done"
    assert status_of(pipeline, task_id).attempts == 1


# --- 2. status records change only by conditional writes -----------------------------------


def start_claiming_worker(pipeline, settings, task_id: str, handler, started: threading.Event):
    """Worker A, running data_transformation with handler, once its run has claimed the task.

    A has one slot, so it cannot pull a redelivered copy itself and the copy goes elsewhere.
    (With a free slot A could take the task over, as a suspect run in a child process that
    runs the real handler: a different race from the ones these tests set up.)"""
    a = Worker(
        settings.replace(worker_concurrency=1),
        task_types=builtin_registry().with_handlers(data_transformation=handler),
    )
    thread_a, results_a = run_in_thread(a)
    try:
        assert started.wait(30)
        wait_for(
            lambda: (s := status_store(pipeline).get(task_id)) is not None and s.run is not None,
            10,
            "A's claim",
        )
    except BaseException:
        a.shutdown.set()
        raise
    return a, thread_a, results_a


def two_workers_racing_on_one_task(pipeline, first_handler):
    """Worker A runs the task and loses storage for its claim (and its Pub/Sub leases);
    worker B gets the redelivered message, takes the task over and succeeds; then A finishes
    with first_handler's result. Returns (task_id, A's summary, B's summary)."""
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    settings = pipeline.replace(idle_timeout_seconds=3, claim_seconds=3)
    started, release = threading.Event(), threading.Event()

    def held_then(ctx, payload):
        started.set()
        release.wait(60)
        first_handler(ctx, payload)

    a, thread_a, results_a = start_claiming_worker(pipeline, settings, task_id, held_then, started)
    try:
        # A is cut off: its claim renewals and lease extensions fail from now on. Its fence
        # is off, as if the renewals had begun to fail too late for it (the next test shows
        # the fence): A runs on past its claim, and only the record can refuse its result.
        a.claims.fence_after = float("inf")
        cut_off_claims(a)
        with Blip(a.subscriber, "modify_ack_deadline"):
            b = Worker(settings.replace(idle_timeout_seconds=30))
            thread_b, results_b = run_in_thread(b)
            wait_for(
                lambda: status_of(pipeline, task_id).state == "succeeded",
                60,
                "B to take the task over (A's lease lapses at the 10 s ack deadline) and succeed",
            )
            b.shutdown.set()
            thread_b.join(30)
    finally:
        release.set()
        thread_a.join(60)
    return task_id, results_a[0], results_b[0]


def cut_off_claims(worker: Worker) -> None:
    """From now on, every claim write of worker fails (storage unreachable from it alone)."""
    worker.claims._tend = lambda run, now: (_ for _ in ()).throw(gexc.ServiceUnavailable("cut"))


def test_a_run_that_cannot_renew_its_claim_stops_before_the_claim_runs_out(pipeline):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    started, stopped_at = threading.Event(), []

    def long_and_cooperative(ctx, payload):
        started.set()
        try:
            ctx.sleep(60)
        finally:
            stopped_at.append(utcnow())

    # A claim of 8 s: A is fenced 6 s after its last renewal, 2 s before the claim runs out.
    settings = pipeline.replace(claim_seconds=8, idle_timeout_seconds=3)
    a, thread_a, results_a = start_claiming_worker(
        pipeline, settings, task_id, long_and_cooperative, started
    )
    try:
        cut_off_claims(a)
        wait_for(lambda: stopped_at, 3 * settings.claim_seconds, "A's run to stop by itself")
        # No renewal of A's lands any more: the record holds A's last claim.
        claim = status_store(pipeline).get(task_id).run
    finally:
        a.shutdown.set()
        thread_a.join(60)

    assert stopped_at[0] < claim.lease_until, "stopped while its claim still held"
    assert results_a[0].outcomes["released"] == 1, "the message went back"
    assert results_a[0].outcomes["succeeded"] == 0
    # Then another execution takes the task over and runs it to the end.
    summary = drain_subscription(settings.replace(idle_timeout_seconds=20, max_messages=1))
    assert summary.outcomes["succeeded"] == 1
    status = status_of(pipeline, task_id)
    assert status.state == TaskState.SUCCEEDED and status.interruptions == 1
    assert pull_all(pipeline, pipeline.dlq_subscription_path, wait=1) == []


def test_a_run_that_lost_its_claim_cannot_overwrite_another_runs_success(pipeline):
    def fails(ctx, payload):
        raise RuntimeError("late failure of the cut-off run")

    task_id, summary_a, summary_b = two_workers_racing_on_one_task(pipeline, fails)

    assert summary_b.outcomes["succeeded"] == 1
    # A's late result is refused: it is a duplicate of B's success.
    assert summary_a.outcomes["duplicate"] == 1
    assert summary_a.outcomes["retried"] == summary_a.outcomes["succeeded"] == 0
    status = status_of(pipeline, task_id)
    assert status.state == TaskState.SUCCEEDED and status.last_error is None
    assert status.interruptions == 1, "B counted A's expired claim"
    assert outputs_of(pipeline, task_id)
    assert pull_all(pipeline, pipeline.dlq_subscription_path, wait=1) == []


def test_a_cut_off_run_failing_for_good_cannot_dead_letter_a_task_that_succeeded(pipeline):
    def fails_for_good(ctx, payload):
        raise PermanentTaskError("permanent failure of the cut-off run")

    task_id, summary_a, summary_b = two_workers_racing_on_one_task(pipeline, fails_for_good)

    assert summary_a.outcomes["dead_lettered"] == 0
    assert status_of(pipeline, task_id).state == TaskState.SUCCEEDED
    assert pull_all(pipeline, pipeline.dlq_subscription_path, wait=1) == []


def test_a_write_decided_on_a_stale_read_is_refused_not_landed(pipeline):
    store = status_store(pipeline)
    delivery = Delivery(task_id="stale-1", task_type="data_transformation", message_id="m1")
    assert store.create(lifecycle.queued(delivery, utcnow()))
    stale = store.read("stale-1")
    done = store.transition(
        "stale-1", lifecycle.succeed(delivery, "1-aa", "exec-b", 1, [], utcnow())
    )
    assert done.written

    # A claim decided on the read taken before the success (a delayed `running` write).
    with pytest.raises(gexc.PreconditionFailed):
        store.write(stale.record.model_copy(update={"state": TaskState.RUNNING}), stale.generation)
    late = store.transition("stale-1", lifecycle.claim(delivery, "2-bb", "exec-a", utcnow(), 60))
    assert late.refused and late.refusal.reason == "finished"
    assert store.get("stale-1").state == TaskState.SUCCEEDED


def test_a_garbage_message_naming_a_succeeded_task_leaves_its_record_alone(pipeline):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    drain_subscription(pipeline)
    before = status_store(pipeline).read(task_id)
    assert before.record.state == TaskState.SUCCEEDED

    publish_raw(pipeline, b"{garbage", task_id=task_id, task_type="data_transformation")
    summary = drain_subscription(pipeline)

    assert summary.outcomes["dead_lettered"] == 1
    after = status_store(pipeline).read(task_id)
    assert after.generation == before.generation and after.record.state == TaskState.SUCCEEDED


# --- 3. the outputs a success names come from one run over one input -----------------------


def test_outputs_named_by_a_success_come_from_one_run_over_one_input(pipeline, tmp_path):
    upload(pipeline, "changing.txt", b"version one\n")
    (task_id,) = publish_tasks(pipeline, [("file_processing", {"filename": "changing.txt"})])
    proc, reached = start_fault_worker(pipeline, "write_one_output_then_hang", tmp_path)
    try:
        wait_for(reached.exists, 30, "the first run to write one output")
        kill(proc)
        left_behind = output_objects(pipeline, task_id)
        assert list(left_behind) and list(left_behind)[0].endswith("/processed.txt")
        # The input changes (to binary: the next run writes processed.gz, not processed.txt).
        v2 = bytes(range(256))
        upload(pipeline, "changing.txt", v2, content_type="application/octet-stream")
        summary = drain_subscription(pipeline.replace(idle_timeout_seconds=14))
    finally:
        kill(proc)

    assert summary.outcomes["succeeded"] == 1
    status = status_of(pipeline, task_id)
    assert sorted(ref.name for ref in status.outputs) == ["metadata.json", "processed.gz"]
    assert len({ref.uri.rsplit("/", 2)[-2] for ref in status.outputs}) == 1, "one run's set"
    outputs = outputs_of(pipeline, task_id)
    assert json.loads(outputs["metadata.json"])["sha256"] == hashlib.sha256(v2).hexdigest()
    assert not any(name in output_objects(pipeline, task_id) for name in left_behind), (
        "the dead run's partial set was deleted by the run that committed"
    )


# --- 5. leases outlive pull failures; SIGTERM during pull retries -------------------------


def failing_pull_after_first(worker: Worker, error=None) -> Counter:
    """From the second pull on, every pull of this worker fails."""
    real = worker.subscriber.pull
    calls = Counter()

    def pull(*args, **kwargs):
        calls["pull"] += 1
        if calls["pull"] > 1:
            raise error or gexc.ServiceUnavailable("Pub/Sub unreachable (injected)")
        return real(*args, **kwargs)

    worker.subscriber.pull = pull
    return calls


def test_leases_are_kept_while_pull_keeps_failing_so_a_long_task_runs_once(pipeline):
    upload(pipeline, "long.txt", b"long\n")
    (task_id,) = publish_tasks(
        pipeline, [("file_processing", {"filename": "long.txt", "processing_time": 16})]
    )
    settings = pipeline.replace(max_processing_time_seconds=30, infra_retry_seconds=3)
    runs = Counter()
    registry = counting(builtin_registry(), "file_processing", runs)
    first = Worker(settings, task_types=registry)
    failing_pull_after_first(first)
    thread, results = run_in_thread(first)
    wait_for(lambda: runs[task_id] == 1, 30, "the task to start")
    # Meanwhile another execution drains the subscription: it must not get the message.
    other = drain_subscription(settings.replace(idle_timeout_seconds=14), task_types=registry)
    thread.join(60)

    (outcome,) = results
    assert isinstance(outcome, InfrastructureError), "exit 2: Pub/Sub stayed unreachable"
    assert other.received == 0 and runs[task_id] == 1
    assert status_of(pipeline, task_id).state == TaskState.SUCCEEDED


def test_sigterm_during_pull_retries_gets_its_grace_period_and_returns_the_rest(pipeline):
    upload(pipeline, "long.txt", b"long\n")
    (task_id,) = publish_tasks(
        pipeline, [("file_processing", {"filename": "long.txt", "processing_time": 25})]
    )
    runs = Counter()
    registry = counting(builtin_registry(), "file_processing", runs)
    settings = pipeline.replace(
        max_processing_time_seconds=30, infra_retry_seconds=60, shutdown_grace_seconds=2
    )
    worker = Worker(settings, task_types=registry)
    failing_pull_after_first(worker)
    thread, results = run_in_thread(worker)
    wait_for(lambda: runs[task_id] == 1, 30, "the task to start")
    time.sleep(1)  # pull is failing and being retried now
    worker.shutdown.set()
    stopped_at = time.monotonic()
    thread.join(30)

    assert time.monotonic() - stopped_at < 6, "grace period, then out"
    assert results[0].stop_reason == "shutdown" and results[0].outcomes["released"] == 1
    # Returned at once, not left to its lease: back well within the 10 s ack deadline.
    back = pull_all(pipeline, pipeline.subscription_path, wait=3, ack=False)
    assert [m.message.attributes["task_id"] for m in back] == [task_id]
    assert status_of(pipeline, task_id).run is None, "its claim was released"


# --- 6. an outage does not spend the task's attempts -----------------------------------


def test_a_storage_outage_spans_six_executions_and_spends_no_delivery_attempt(
    settings, tmp_path, monkeypatch
):
    from devstack.emulators import free_port, start_gcs_emulator
    from taskcore.bootstrap import bootstrap

    port, data_dir = free_port(), str(tmp_path / "gcs")
    gcs = start_gcs_emulator(port=port, data_dir=data_dir)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.env_value)
        settings = settings.replace(storage_emulator_host=gcs.env_value, infra_retry_seconds=0.5)
        bootstrap(settings)
        (task_id,) = publish_tasks(settings, [("data_transformation", {"dataset_size": 5})])
        gcs.stop()
        for _ in range(6):  # Pub/Sub would dead-letter after 5 deliveries
            with pytest.raises(InfrastructureError):
                drain_subscription(settings)
        gcs = start_gcs_emulator(port=port, data_dir=data_dir)
        deliveries = []
        registry = builtin_registry()
        real = registry.get("data_transformation").handler

        def recording(ctx, payload):
            deliveries.append(ctx.delivery_attempt)
            real(ctx, payload)

        summary = drain_subscription(
            settings, task_types=registry.with_handlers(data_transformation=recording)
        )
        assert summary.outcomes["succeeded"] == 1
        assert deliveries == [1], "never pulled while storage was down"
        assert status_of(settings, task_id).attempts == 1
        assert pull_all(settings, settings.dlq_subscription_path, wait=1) == []
    finally:
        gcs.stop()


# --- 7. errors of the task's own data are permanent --------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        lambda ctx, payload: float(10**400),
        lambda ctx, payload: json.loads("[" * 100_000 + "]" * 100_000),
        lambda ctx, payload: sorted([1, "two"]),
    ],
    ids=["overflow", "recursion", "type"],
)
def test_data_errors_are_dead_lettered_on_the_first_attempt(pipeline, broken):
    (task_id,) = publish_tasks(pipeline, [("data_transformation", {"dataset_size": 5})])
    registry = builtin_registry().with_handlers(data_transformation=broken)
    summary = drain_subscription(pipeline, task_types=registry)

    assert summary.outcomes["dead_lettered"] == 1 and summary.outcomes["retried"] == 0
    status = status_of(pipeline, task_id)
    assert status.attempts == 1 and status.last_error.type == "data_error"
    (dead,) = pull_all(pipeline, pipeline.dlq_subscription_path)
    assert dead.message.attributes["error_type"] == "data_error"


def test_a_non_numeric_replay_count_is_dead_lettered_not_returned_forever(pipeline):
    from tests.integration.helpers import publish_envelope_with

    task_id = publish_envelope_with(pipeline, {"replay_count": "several"})
    summary = drain_subscription(pipeline)

    assert summary.outcomes["dead_lettered"] == 1
    (dead,) = pull_all(pipeline, pipeline.dlq_subscription_path)
    assert dead.message.attributes["error_type"] == "invalid_attribute"
    assert dead.message.attributes["task_id"] == task_id


# --- 8. Pub/Sub's own dead letters reconcile the record ----------------------------------


def test_a_task_pubsub_dead_lettered_itself_is_reconciled_when_first_scanned(pipeline):
    task_id = seed_pubsub_dead_letter(pipeline, {"dataset_size": 3}, deliveries=5)
    delivery = Delivery(task_id=task_id, task_type="data_transformation", message_id="m")
    store = status_store(pipeline)
    crashed = store.transition(task_id, lifecycle.claim(delivery, "5-dead", "gone", utcnow(), 3))
    assert crashed.record.state == TaskState.RUNNING  # the execution died with it

    result = taskctl(pipeline, "dlq", "list")

    assert result.exit_code == 0, result.output
    status = store.get(task_id)
    assert status.state == TaskState.DEAD_LETTERED and status.run is None
    assert status.dead_letter.by == "pubsub"
    assert status.last_error.type == "delivery_attempts_exhausted"
