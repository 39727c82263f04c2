"""What the checker can find wrong: a rule, the task it concerns, and the evidence."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class Rule(enum.StrEnum):
    """A promise of the pipeline (or of the campaign's own clean-up) that was broken."""

    # Every tracked task ends, exactly one way, the way its type and payload say.
    NOT_ENDED = "not_ended"
    UNEXPECTED_END = "unexpected_end"
    # A succeeded task names one run's complete, intact set of outputs, and keeps it.
    OUTPUTS_MIXED_RUNS = "outputs_mixed_runs"
    OUTPUTS_INCOMPLETE = "outputs_incomplete"
    OUTPUT_MISSING = "output_missing"
    OUTPUT_CORRUPT = "output_corrupt"
    OUTPUT_GENERATION_CHANGED = "output_generation_changed"
    # The DLQ holds what failed, once, with the task's own reason, and nothing that succeeded.
    SUCCEEDED_IN_DLQ = "succeeded_in_dlq"
    TWO_DEAD_LETTERS = "two_dead_letters"
    DEAD_LETTER_MISSING = "dead_letter_missing"
    FOREIGN_REASON = "foreign_reason"
    REPLACED_STILL_IN_DLQ = "replaced_still_in_dlq"
    UNKNOWN_DEAD_LETTER = "unknown_dead_letter"
    # The record tells the truth, and only ever moves forward.
    RECORD_UNTRUTHFUL = "record_untruthful"
    RECORD_REGRESSED = "record_regressed"
    TRANSITION_NOT_ALLOWED = "transition_not_allowed"
    HISTORY_INVALID = "history_invalid"
    REPLACEMENT_UNLINKED = "replacement_unlinked"
    UNKNOWN_TASK = "unknown_task"
    # Every execution exits; every process the campaign started is gone at the end.
    EXECUTION_HUNG = "execution_hung"
    PROCESS_LEFT = "process_left"


@dataclass(frozen=True)
class Violation:
    """One broken rule: which, for which task (or execution, or process), and the evidence."""

    rule: Rule
    subject: str | None
    evidence: str

    def describe(self) -> str:
        return f"{self.rule}: {self.subject or '-'}: {self.evidence}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule": str(self.rule)}
