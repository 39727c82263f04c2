"""A file per violating task: what the checker saw, for whoever fixes the product.

`<log_dir>/violations/<task_id>.txt` holds the task's violations, its final status record
(JSON, with generation), its dead letters, the watcher's last sighting, what the campaign
expected and did to it, and every log line of the API and the worker executions that
names it, in order per file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from chaos.evidence import Evidence
from chaos.ledger import Ledger
from chaos.violations import Violation

MAX_DOSSIERS = 50


def write_dossiers(
    log_dir: Path, evidence: Evidence, ledger: Ledger, violations: list[Violation]
) -> list[Path]:
    """Write one dossier per task named by a violation (at most MAX_DOSSIERS); their paths."""
    by_task: dict[str, list[Violation]] = defaultdict(list)
    for violation in violations:
        if violation.subject in evidence.records or violation.subject in evidence.tracked:
            by_task[violation.subject].append(violation)
    chosen = sorted(by_task)[:MAX_DOSSIERS]
    if not chosen:
        return []
    lines = _log_lines(log_dir, set(chosen))
    operator = ledger.operator_records()
    folder = log_dir / "violations"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task_id in chosen:
        path = folder / f"{task_id}.txt"
        path.write_text(
            _dossier(task_id, evidence, ledger, operator, by_task[task_id], lines[task_id])
        )
        written.append(path)
    return written


def _dossier(task_id, evidence, ledger, operator, violations, lines) -> str:
    out = [f"task {task_id}", "", "violations:"]
    out += [f"  {v.describe()}" for v in violations]
    tracked = evidence.tracked.get(task_id) or ledger.get(task_id)
    if tracked is not None:
        out += [
            "",
            f"campaign: {tracked.origin} {tracked.task_type} {json.dumps(tracked.fields)}",
            f"expected: {tracked.expected.describe()}; replay_of {tracked.replay_of}; "
            f"life expected {tracked.min_replay_count}; accepted at {tracked.accepted_at:.2f}s",
        ]
    acts = [r for r in operator if r.task_id == task_id or task_id in str(r.detail)]
    out += [
        f"operator at {r.at:.2f}s: {r.action} {json.dumps(r.detail, default=str)}" for r in acts
    ]
    sighting = evidence.last_sightings.get(task_id)
    if sighting is not None:
        out.append(f"watcher's last sighting: {sighting.describe()}")
    stored = evidence.records.get(task_id)
    out += ["", f"final record (generation {stored.generation if stored else None}):"]
    out.append(stored.record.model_dump_json(indent=2) if stored else "  none")
    letters = [letter for letter in evidence.dead_letters if letter.task_id == task_id]
    out += ["", f"dead letters ({len(letters)}):"]
    out += [f"  {letter.describe()}" for letter in letters]
    out += ["", f"log lines ({len(lines)}):"]
    out += lines
    return "\n".join(out) + "\n"


def _log_lines(log_dir: Path, task_ids: set[str]) -> dict[str, list[str]]:
    """Every line of the campaign's logs that names one of task_ids, by task id."""
    found: dict[str, list[str]] = defaultdict(list)
    # The emulators' logs name every request: noise next to what the pipeline said.
    files = [log_dir / "api.log", *sorted((log_dir / "executions").glob("*.log"))]
    for path in files:
        if not path.exists():
            continue
        with path.open(errors="replace") as lines:
            for line in lines:
                for task_id in task_ids:
                    if task_id in line:
                        found[task_id].append(f"{path.name}: {line.rstrip()}")
    return found
