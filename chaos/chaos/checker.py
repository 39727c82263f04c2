"""The checker: every tracked task ended exactly one way, and the record tells the truth.

    result = check(evidence)          # chaos.evidence.Evidence: plain data, read once
    result.violations                 # [] when the pipeline kept every promise
    result.outcomes                   # Counter of how tracked tasks ended

Every task the API accepted is exactly one of:

- succeeded: not in the DLQ; its record names a complete output set of one run, every
  output at its named generation, intact (CRC32C), under one run prefix, and (chaos types)
  saying so itself: the same run id as its prefix, the payload's hash, every part once;
  the generations are those the watcher first saw;
- dead-lettered: its record `dead_lettered` with the reason its handler or data produced,
  after the failures its type implies, and exactly one dead letter in the DLQ, published by
  the worker, with that same reason, of the task's current life;
- replaced: `dead_lettered` with `replayed_as` naming the replacement a `--set` replay made,
  which links back (`replay_of`) and is checked the same way; the original is no longer in
  the DLQ;
- cancelled.

And, whatever the task: its history is a path the lifecycle allows, and the final record
follows the watcher's last sighting of it. A task the API did not accept but that ran (found
in the bucket by its record, named by its tag) is held to the same rules. Dead letters of
no known task, executions that never exited (or exited past their bound), and processes the
campaign left behind are violations too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from chaos.evidence import Evidence, output_json
from chaos.ledger import REPLACEMENT, Tracked
from chaos.output_rules import check_outputs
from chaos.records import Observation, check_history, check_step
from chaos.tasks import (
    BUILTIN_TYPES,
    CHAOS_TYPES,
    SUCCEEDED,
    Expected,
    expected_end,
)
from chaos.violations import Rule, Violation
from taskcore.status import StoredStatus, TaskState

# How a task ended, as the report counts it.
REPLACED = "replaced"
NOT_ENDED = "not_ended"


@dataclass
class CheckResult:
    """Violations, and how the tracked tasks (and unaccepted ones that ran) ended."""

    violations: list[Violation] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    outcomes_by_type: dict[str, Counter] = field(default_factory=dict)
    unaccepted_ran: Counter = field(default_factory=Counter)
    leftover_output_sets: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations


def check(evidence: Evidence) -> CheckResult:
    """Judge the evidence; see the module docstring for the rules."""
    return _Checker(evidence).run()


class _Checker:
    def __init__(self, evidence: Evidence) -> None:
        self.ev = evidence
        self.letters = evidence.letters_by_task()
        self.result = CheckResult(violations=list(evidence.watcher_violations))
        self.checked: set[str] = set()

    def flag(self, rule: Rule, subject: str | None, evidence: str) -> None:
        self.result.violations.append(Violation(rule, subject, evidence))

    def run(self) -> CheckResult:
        for task_id, tracked in sorted(self.ev.tracked.items()):
            if tracked.origin == REPLACEMENT:
                continue  # checked through the task it replaces
            outcome = self.task(task_id, tracked.task_type, tracked.expected, tracked)
            self.result.outcomes[outcome] += 1
            self.result.outcomes_by_type.setdefault(tracked.task_type, Counter())[outcome] += 1
        for task_id, tracked in sorted(self.ev.tracked.items()):
            if task_id not in self.checked:  # a replacement whose original does not name it
                self.task(task_id, tracked.task_type, tracked.expected, tracked)
        self.untracked_records()
        self.unknown_dead_letters()
        self.executions()
        for name in self.ev.leftover_processes:
            self.flag(Rule.PROCESS_LEFT, name, "still running after the campaign stopped")
        return self.result

    # --- one task ------------------------------------------------------------------------

    def task(
        self, task_id: str, task_type: str, expected: Expected, tracked: Tracked | None
    ) -> str:
        """Check one task (and any replacement of it); how it ended."""
        self.checked.add(task_id)
        stored = self.ev.records.get(task_id)
        letters = self.letters.get(task_id, [])
        if stored is None:
            self.flag(Rule.NOT_ENDED, task_id, f"no status record ({expected.describe()} expected)")
            return NOT_ENDED
        record = stored.record
        for violation in check_history(task_id, record):
            self.result.violations.append(violation)
        sighting = self.ev.last_sightings.get(task_id)
        if sighting is not None:
            self.result.violations.extend(
                check_step(task_id, sighting, Observation.of(stored, float("inf")))
            )
        wanted_life = tracked.min_replay_count if tracked else 0
        if record.replay_count < wanted_life:
            self.flag(
                Rule.NOT_ENDED,
                task_id,
                f"replay {wanted_life} was published but the record is of life "
                f"{record.replay_count} ({record.state})",
            )
            return NOT_ENDED
        if record.state == TaskState.SUCCEEDED:
            self.succeeded(task_id, task_type, expected, stored, letters, tracked)
            return TaskState.SUCCEEDED.value
        if record.state == TaskState.DEAD_LETTERED and record.replayed_as:
            return self.replaced(task_id, stored, letters)
        if record.state == TaskState.DEAD_LETTERED:
            self.dead_lettered(task_id, expected, stored, letters)
            return TaskState.DEAD_LETTERED.value
        if record.state == TaskState.CANCELLED:
            return TaskState.CANCELLED.value
        held = "; the DLQ holds " + "; ".join(x.describe() for x in letters) if letters else ""
        self.flag(
            Rule.NOT_ENDED,
            task_id,
            f"record still {record.state} (generation {stored.generation}, attempts "
            f"{record.attempts}, failures {record.failures}); {expected.describe()} "
            f"expected{held}",
        )
        for letter in letters:
            if not letter.by_worker:
                self.flag(
                    Rule.FOREIGN_REASON,
                    task_id,
                    f"{letter.describe()}, while the record says {record.state} after "
                    f"{record.failures} failures of its own",
                )
        return NOT_ENDED

    def succeeded(self, task_id, task_type, expected, stored, letters, tracked) -> None:
        record = stored.record
        for letter in letters:
            self.flag(Rule.SUCCEEDED_IN_DLQ, task_id, f"succeeded, yet {letter.describe()}")
        if expected.end != SUCCEEDED:
            self.flag(
                Rule.UNEXPECTED_END,
                task_id,
                f"{task_type} succeeded; {expected.describe()} expected",
            )
        fields = tracked.fields if tracked else None
        self.result.violations.extend(check_outputs(self.ev, task_id, task_type, fields, record))
        first = self.ev.first_outputs.get(task_id)
        now = {ref.name: ref.generation for ref in record.outputs}
        if first is not None and first != now:
            self.flag(
                Rule.OUTPUT_GENERATION_CHANGED,
                task_id,
                f"outputs first seen as {sorted(first.items())}, now {sorted(now.items())}",
            )

    def dead_lettered(self, task_id, expected, stored, letters) -> None:
        record = stored.record
        reason = record.dead_letter.error_type if record.dead_letter else None
        if expected.end == SUCCEEDED:
            last = record.last_error
            self.flag(
                Rule.UNEXPECTED_END,
                task_id,
                f"dead-lettered ({reason}; last error {last.type if last else None}: "
                f"{last.message[:200] if last else ''}) after {record.failures} failures; "
                "succeeded expected",
            )
        if not letters:
            self.flag(
                Rule.DEAD_LETTER_MISSING,
                task_id,
                f"record dead_lettered ({reason}), but the DLQ holds no dead letter of it",
            )
        if len(letters) > 1:
            described = "; ".join(letter.describe() for letter in letters)
            self.flag(Rule.TWO_DEAD_LETTERS, task_id, f"{len(letters)} dead letters: {described}")
        own = expected.error_type if expected.end != SUCCEEDED else None
        for letter in letters:
            if not letter.by_worker or (own is not None and letter.error_type != own):
                self.flag(
                    Rule.FOREIGN_REASON,
                    task_id,
                    f"{letter.describe()}; {own or 'a failure of its own'} expected",
                )
            elif letter.replay_count != record.replay_count:
                self.flag(
                    Rule.RECORD_UNTRUTHFUL,
                    task_id,
                    f"{letter.describe()} is of life {letter.replay_count}, the record of "
                    f"life {record.replay_count}",
                )
        self.dead_letter_record(task_id, expected, stored, letters)

    def dead_letter_record(self, task_id, expected, stored, letters) -> None:
        """The record must agree with its dead letter, say it is confirmed, and (for a reason
        of the task's own) count the failures its type implies. Whether the reason is the
        task's own is FOREIGN_REASON's business, judged once on the dead letter."""
        record = stored.record
        info = record.dead_letter
        problems = []
        if info is None:
            problems.append("no dead_letter in the record")
        else:
            if info.pending:
                problems.append("dead_letter.pending is still true")
            if len(letters) == 1:
                letter = letters[0]
                if info.error_type != letter.error_type:
                    problems.append(
                        f"dead_letter.error_type {info.error_type}, the DLQ says {letter.error_type}"
                    )
                if (info.by == "worker") != letter.by_worker:
                    problems.append(f"dead_letter.by {info.by}, the DLQ says otherwise")
            last = record.last_error.type if record.last_error else None
            if last != info.error_type:
                problems.append(f"last_error {last}, dead_letter.error_type {info.error_type}")
            own = (
                expected.end != SUCCEEDED
                and info.by == "worker"
                and info.error_type == expected.error_type
            )
            if own and expected.failures is not None and record.failures != expected.failures:
                problems.append(f"failures {record.failures}, {expected.failures} expected")
        if problems:
            self.flag(
                Rule.RECORD_UNTRUTHFUL,
                task_id,
                f"generation {stored.generation}: " + "; ".join(problems),
            )

    def replaced(self, task_id: str, stored: StoredStatus, letters) -> str:
        new_id = stored.record.replayed_as
        for letter in letters:
            self.flag(
                Rule.REPLACED_STILL_IN_DLQ,
                task_id,
                f"replaced by {new_id}, yet {letter.describe()}",
            )
        replacement = self.ev.tracked.get(new_id)
        if replacement is None or replacement.replay_of != task_id:
            self.flag(
                Rule.REPLACEMENT_UNLINKED,
                task_id,
                f"replayed_as names {new_id}, which no replay of this task made",
            )
            return REPLACED
        new_record = self.ev.records.get(new_id)
        if new_record is not None and new_record.record.replay_of != task_id:
            self.flag(
                Rule.REPLACEMENT_UNLINKED,
                new_id,
                f"replacement of {task_id}, but its replay_of is {new_record.record.replay_of}",
            )
        self.task(new_id, replacement.task_type, replacement.expected, replacement)
        return REPLACED

    # --- what no submission accounts for ---------------------------------------------------

    def untracked_records(self) -> None:
        """Records of tasks the API did not accept: they ran, so they must end like any."""
        for task_id, stored in sorted(self.ev.records.items()):
            if task_id in self.checked:
                continue
            record = stored.record
            expected, fields = self.unaccepted_expectation(task_id, stored)
            if expected is None:
                self.flag(
                    Rule.UNKNOWN_TASK,
                    task_id,
                    f"a {record.task_type} record ({record.state}) no submission accounts for",
                )
                continue
            tracked = Tracked(task_id, record.task_type, fields or {}, expected) if fields else None
            outcome = self.task(task_id, record.task_type, expected, tracked)
            self.result.unaccepted_ran[outcome] += 1

    def unaccepted_expectation(self, task_id: str, stored: StoredStatus):
        """(How it must end, its payload fields) for an unaccepted task, from its tag."""
        record = stored.record
        if record.task_type in BUILTIN_TYPES:
            return Expected(SUCCEEDED), None
        if record.task_type not in CHAOS_TYPES:
            return None, None
        payload = self.payload_seen(task_id, stored)
        tag = payload.get("tag") if payload else None
        spec = self.ev.unaccepted.get(tag) if tag else None
        if spec is None or spec.task_type != record.task_type:
            return None, None
        return expected_end(spec.task_type, spec.fields, self.ev.max_failures), spec.fields

    def payload_seen(self, task_id: str, stored: StoredStatus) -> dict | None:
        """The payload a task ran with, from its dead letter or its first output."""
        for letter in self.letters.get(task_id, []):
            if letter.payload is not None:
                return letter.payload
        for ref in stored.record.outputs:
            obj = self.ev.outputs.get((ref.uri, ref.generation))
            content = output_json(obj) if obj is not None and obj.found == "yes" else None
            if isinstance(content, dict) and isinstance(content.get("payload"), dict):
                return content["payload"]
        return None

    def unknown_dead_letters(self) -> None:
        for task_id, letters in sorted(self.letters.items()):
            if task_id not in self.checked:
                for letter in letters:
                    self.flag(Rule.UNKNOWN_DEAD_LETTER, task_id, letter.describe())

    def executions(self) -> None:
        for execution in self.ev.executions:
            if not execution.ended:
                self.flag(Rule.EXECUTION_HUNG, execution.name, "still running when checked")
            elif execution.exited_within_bound is False:
                self.flag(
                    Rule.EXECUTION_HUNG,
                    execution.name,
                    f"exited ({execution.ended_by}, code {execution.returncode}) "
                    f"{execution.exit_lag_seconds:.1f}s after its last work or SIGTERM; "
                    f"bound {self.ev.exit_bound_seconds:g}s",
                )
