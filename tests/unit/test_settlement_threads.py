"""The threads that settle messages survive any failure and send what they could not send.

google-api-core raises RetryError when its own retry gives up (about 10 s of failures), and
RetryError is no GoogleAPICallError: a loop that caught only the latter died on the first
long blip, and no ack or lease extension was sent for the rest of the execution.
"""

from __future__ import annotations

import threading
import time

import pytest
from google.api_core import exceptions as gexc

from background_worker.acks import Settler
from background_worker.leases import LeaseKeeper
from taskcore.dlq import scan as scan_module
from taskcore.dlq.letters import DeadLetter
from taskcore.dlq.replay import _AckBatcher
from taskcore.dlq.scan import DlqScan
from taskcore.settings import Settings


def retry_error() -> gexc.RetryError:
    return gexc.RetryError("Timeout of 10.0s exceeded", cause=gexc.ServiceUnavailable("down"))


class BlippingSubscriber:
    """A subscriber whose ack and modack calls raise RetryError until `down_until`."""

    def __init__(self, down_for: float = 0.0) -> None:
        self.down_until = time.monotonic() + down_for
        self.acked: list[str] = []
        self.modified: list[tuple[tuple[str, ...], int]] = []
        self.failures = 0
        self.lock = threading.Lock()

    def _maybe_fail(self) -> None:
        if time.monotonic() < self.down_until:
            with self.lock:
                self.failures += 1
            raise retry_error()

    def acknowledge(self, request, retry=None, timeout=None):
        self._maybe_fail()
        with self.lock:
            self.acked.extend(request["ack_ids"])

    def modify_ack_deadline(self, request, retry=None, timeout=None):
        self._maybe_fail()
        with self.lock:
            self.modified.append((tuple(request["ack_ids"]), request["ack_deadline_seconds"]))


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_acks_that_fail_with_retry_error_are_kept_and_sent_once_pubsub_is_back():
    subscriber = BlippingSubscriber(down_for=1.0)
    settler = Settler(subscriber, "projects/p/subscriptions/s")
    try:
        assert settler.ack("a") and settler.ack("b")
        wait_until(lambda: subscriber.failures >= 2)
        assert settler.unsent_acks() == {"a", "b"}, "unsent acks stay known, to keep their leases"
        wait_until(lambda: sorted(subscriber.acked) == ["a", "b"])
        assert settler.unsent_acks() == set()
        assert settler._sender.is_alive(), "the sender survived the blip"
        assert settler.ack("c")
        wait_until(lambda: "c" in subscriber.acked)
    finally:
        assert settler.close(timeout=2) == 0


def test_a_message_returned_during_a_blip_is_returned_once_pubsub_is_back():
    subscriber = BlippingSubscriber(down_for=0.6)
    settler = Settler(subscriber, "projects/p/subscriptions/s")
    try:
        assert settler.nack(["x"]) == 1
        assert settler.delay("y", 30)
        wait_until(lambda: {(("x",), 0), (("y",), 30)} <= set(subscriber.modified))
    finally:
        settler.close(timeout=2)


def test_close_keeps_trying_until_its_timeout_then_reports_what_was_not_sent():
    subscriber = BlippingSubscriber(down_for=60)
    settler = Settler(subscriber, "projects/p/subscriptions/s")
    settler.ack("a")
    started = time.monotonic()
    assert settler.close(timeout=1.0) == 1
    assert 0.9 <= time.monotonic() - started < 5
    assert subscriber.acked == []


def test_a_message_is_settled_once_whatever_is_asked_afterwards():
    subscriber = BlippingSubscriber()
    settler = Settler(subscriber, "projects/p/subscriptions/s")
    try:
        assert settler.ack("a")
        assert not settler.ack("a") and settler.nack(["a"]) == 0 and not settler.delay("a", 5)
    finally:
        settler.close(timeout=2)
    assert subscriber.acked == ["a"] and subscriber.modified == []


class ExplodingSettler:
    """A settler whose extend raises whatever it is told to, then works."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.extended: list[set[str]] = []
        self.unsent: set[str] = {"acked-not-sent"}

    def extend(self, ack_ids, seconds) -> bool:
        if self.errors:
            raise self.errors.pop(0)
        self.extended.append(set(ack_ids))
        return True

    def unsent_acks(self) -> set[str]:
        return set(self.unsent)


def test_the_lease_keeper_survives_any_exception_and_retries_within_a_second():
    settler = ExplodingSettler([retry_error(), RuntimeError("bug")])
    keeper = LeaseKeeper(settler, ack_deadline_seconds=10)
    keeper.interval = 0.2  # the test's ack deadline, in miniature
    keeper.hold("running", time.monotonic() + 60)
    keeper.start()
    try:
        wait_until(lambda: settler.extended, timeout=5)
        assert keeper._thread.is_alive()
        # Held messages and acks not yet confirmed both keep their leases.
        assert settler.extended[0] == {"running", "acked-not-sent"}
    finally:
        keeper.stop()


def make_letter(n: int) -> DeadLetter:
    from datetime import UTC, datetime

    return DeadLetter(
        message_id=f"m{n}",
        ack_id=f"a{n}",
        data=b"{}",
        attributes={},
        publish_time=datetime.now(UTC),
    )


@pytest.fixture
def patient_for_a_moment(monkeypatch):
    monkeypatch.setattr(scan_module, "ACK_PATIENCE_SECONDS", 0.5)


def test_a_dlq_ack_that_keeps_failing_leaves_its_letters_held_not_lost(patient_for_a_moment):
    subscriber = BlippingSubscriber(down_for=60)
    scan = DlqScan(Settings.from_env({}), subscriber)
    letters = [make_letter(1), make_letter(2)]
    scan._held = {letter.message_id: letter for letter in letters}

    failed = scan.ack(letters)

    assert failed == letters and scan.held == 2, "kept, to be handed back to the DLQ on close"


def test_a_dlq_ack_blip_shorter_than_its_patience_acks_everything(patient_for_a_moment):
    subscriber = BlippingSubscriber(down_for=0.2)
    scan = DlqScan(Settings.from_env({}), subscriber)
    letters = [make_letter(1)]
    scan._held = {"m1": letters[0]}

    assert scan.ack(letters) == [] and subscriber.acked == ["a1"] and scan.held == 0


def test_the_dlq_lease_keeper_survives_retry_errors():
    subscriber = BlippingSubscriber(down_for=1.5)  # past the first renewal, a second in
    scan = DlqScan(Settings.from_env({}), subscriber, lease_seconds=3)
    scan._held = {"m1": make_letter(1)}
    scan._start_keeper()
    try:
        wait_until(lambda: subscriber.failures >= 1, timeout=5)
        wait_until(lambda: any(ids == ("a1",) for ids, _ in subscriber.modified), timeout=5)
        assert scan._keeper.is_alive()
    finally:
        scan._stop.set()
        scan._keeper.join(timeout=5)


def test_replay_acks_that_fail_are_counted_never_raised(patient_for_a_moment):
    subscriber = BlippingSubscriber(down_for=60)
    scan = DlqScan(Settings.from_env({}), subscriber)
    letter = make_letter(1)
    scan._held = {"m1": letter}
    batcher = _AckBatcher(scan)

    batcher.add(letter)
    batcher.flush()  # must not raise: the replay is published, the counts must stay whole

    assert batcher.failed == 1 and scan.held == 1
