"""The campaign's operator (`chaos.faults.OperatorActions`): what a person at the console does
that the pipeline must survive.

- publish_duplicate: publish one more message of an accepted task (same task id, same
  payload) straight to the task topic, as a client retrying by hand would;
- replay_in_flight: take a dead-lettered task, put its original message back in flight (a
  duplicate of it), and at once replay its dead letter with `taskctl dlq replay`'s code
  (`run_replay`): plainly (the same task, its next life) or with `--set` (a replacement
  task whose changed payload succeeds), so the replay races its own original.

The operator works straight on the emulators, past the proxies: its actions are the
campaign's faults, not subject to them. What each action did goes to the ledger, which
also learns the lives and replacements the drain and the checker must wait for.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from chaos.ledger import ACCEPTED, Ledger, OperatorRecord, Tracked
from chaos.tasks import DEAD_LETTERED, HEALING_SETS
from taskcore.clients import bucket as make_bucket
from taskcore.clients import storage_client, subscriber_client
from taskcore.dlq.audit import Actor
from taskcore.dlq.letters import DeadLetterFilter
from taskcore.dlq.replay import run_replay
from taskcore.envelope import TaskEnvelope
from taskcore.publishing import Publisher
from taskcore.settings import Settings
from taskcore.status import StatusStore, TaskState, TaskStatus
from taskcore.tasks import TaskRegistry

log = logging.getLogger(__name__)

# Duplicates go to one of the latest accepted tasks, which are most likely still in flight.
RECENT_TASKS = 200
# Records read to find a dead-lettered task to replay.
CANDIDATES_READ = 30
# A task accepted less than this long ago is not yet worth looking at for a replay.
MIN_AGE_SECONDS = 3.0
ACTOR = Actor("chaos", "campaign-operator")


class CampaignOperator:
    """Operator actions on the pipeline's topic, DLQ and bucket; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        registry: TaskRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.registry = registry
        self.clock = clock
        self.started = started if started is not None else clock()
        self.publisher = Publisher(settings)
        self.subscriber = subscriber_client(settings)
        self.bucket = make_bucket(settings, storage_client(settings))
        self.store = StatusStore(self.bucket)

    def close(self) -> None:
        self.publisher.close()
        self.subscriber.close()

    def now(self) -> float:
        return self.clock() - self.started

    # --- publish_duplicate -----------------------------------------------------------------
    def publish_duplicate(self, rng: random.Random) -> str | None:
        accepted = self.ledger.accepted_ids()
        if not accepted:
            return None
        tracked = self.ledger.get(rng.choice(accepted[-RECENT_TASKS:]))
        message_id = self._publish_again(tracked, replay_count=0)
        self.ledger.operated(
            OperatorRecord(
                "publish_duplicate", self.now(), tracked.task_id, {"message_id": message_id}
            )
        )
        return tracked.task_id

    def _publish_again(self, tracked: Tracked, replay_count: int) -> str:
        """Another message of the task, as its submission published it (of life replay_count)."""
        envelope = TaskEnvelope(
            task_id=tracked.task_id, task_type=tracked.task_type, payload=dict(tracked.fields)
        )
        extra = {"replay_count": str(replay_count)} if replay_count else None
        return self.publisher.publish_task(envelope, extra)

    # --- replay_in_flight ------------------------------------------------------------------
    def replay_in_flight(self, rng: random.Random) -> str | None:
        found = self._dead_lettered_task(rng)
        if found is None:
            return None
        tracked, record = found
        sets = HEALING_SETS.get(tracked.task_type, ())
        mode = "set" if sets and rng.random() < 0.5 else "plain"
        # Its original goes back in flight first, so the replay races it.
        duplicate_id = self._publish_again(tracked, replay_count=record.replay_count)
        detail = {"mode": mode, "duplicate_message_id": duplicate_id, "life": record.replay_count}
        previous_life = tracked.min_replay_count
        if mode == "plain":
            # Registered before the publish: the drain must not see the task as ended meanwhile.
            self.ledger.expect_life(tracked.task_id, record.replay_count + 1)
        result = run_replay(
            self.settings,
            DeadLetterFilter(task_ids=frozenset({tracked.task_id})),
            actor=ACTOR,
            bucket=self.bucket,
            publisher=self.publisher,
            subscriber=self.subscriber,
            registry=self.registry,
            sets=list(sets) if mode == "set" else (),
        )
        detail.update(done=result.done, matched=result.matched, failed=result.failed[:3])
        if mode == "set" and tracked.task_id in result.new_tasks:
            new_task_id = result.new_tasks[tracked.task_id]
            fields = {**tracked.fields, **dict(sets)}
            self.ledger.replaced(tracked.task_id, new_task_id, fields, self.now())
            detail["new_task_id"] = new_task_id
        self.ledger.operated(
            OperatorRecord("replay_in_flight", self.now(), tracked.task_id, detail)
        )
        if not result.done:
            # Not in the DLQ (yet): the task's life is as it was, nothing to wait for.
            if mode == "plain":
                self.ledger.expect_life(tracked.task_id, previous_life)
            return None
        return tracked.task_id

    def _dead_lettered_task(self, rng: random.Random) -> tuple[Tracked, TaskStatus] | None:
        """A tracked task whose record says dead-lettered (confirmed) and not yet replaced."""
        cutoff = self.now() - MIN_AGE_SECONDS
        candidates = sorted(
            (
                t
                for t in self.ledger.tracked().values()
                if t.origin == ACCEPTED
                and t.expected.end == DEAD_LETTERED
                and t.accepted_at < cutoff
            ),
            key=lambda t: t.task_id,
        )
        rng.shuffle(candidates)
        for tracked in candidates[:CANDIDATES_READ]:
            record = self.store.get(tracked.task_id)
            if (
                record is not None
                and record.state == TaskState.DEAD_LETTERED
                and record.dead_letter is not None
                and not record.dead_letter.pending
                and record.replayed_as is None
                and record.replay_count >= tracked.min_replay_count
            ):
                return tracked, record
        return None
