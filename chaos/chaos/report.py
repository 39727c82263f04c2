"""A campaign's report: text for the terminal, JSON for bench/results.

Tasks accepted (and what became of the rest), outcomes by kind and by type, faults by kind
as the injector played them, executions (count, exit codes, what ended them), operator
actions, violations (each with its rule, task and evidence), seed, emulator and timings.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chaos.campaign import CampaignOutcome
from chaos.submitter import ERROR


def report_data(outcome: CampaignOutcome) -> dict[str, Any]:
    """The report as JSON-ready data."""
    config = outcome.config
    ledger = outcome.ledger
    faults = {kind: asdict(tally) for kind, tally in outcome.faults.items()}
    operator = Counter()
    for record in ledger.operator_records():
        mode = record.detail.get("mode")
        operator[f"{record.action}:{mode}" if mode else record.action] += 1
    executions = outcome.executions
    tracked = ledger.tracked()
    return {
        "seed": config.seed,
        "emulator": outcome.emulator,
        "config": {
            "tasks": config.tasks,
            "faults": config.faults,
            "rate_per_second": round(config.submit_rate, 3),
            "submit_seconds": round(config.submit_seconds, 1),
            "parallelism": config.parallelism,
            "memory_hog_weight": config.memory_hog_weight,
            "drain_timeout": config.drain_timeout,
        },
        "tasks": {
            "submitted": outcome.submissions_sent,
            "by_answer": dict(sorted(ledger.submission_outcomes().items())),
            "accepted": len(ledger.accepted_ids()),
            "replacements": len(tracked) - len(ledger.accepted_ids()),
            "unaccepted_that_ran": dict(outcome.result.unaccepted_ran),
            # Answers that were neither 202, 503 nor a timeout: what they said.
            "errors": [
                f"{s.spec.tag} {s.spec.task_type} at {s.at:.1f}s: {s.status or ''} {s.detail}"
                for s in ledger.submissions()
                if s.outcome == ERROR
            ][:20],
        },
        "outcomes": dict(sorted(outcome.result.outcomes.items())),
        "outcomes_by_type": {
            task_type: dict(sorted(counts.items()))
            for task_type, counts in sorted(outcome.result.outcomes_by_type.items())
        },
        "faults": {
            "planned": len(outcome.schedule.faults),
            "planned_by_kind": dict(sorted(outcome.schedule.by_kind().items())),
            "applied": sum(t.applied for t in outcome.faults.values()),
            "by_kind": faults,
            "failures": outcome.fault_failures,
        },
        "executions": {
            "count": len(executions),
            "exit_codes": _count(r.signal or str(r.returncode) for r in executions),
            "ended_by": _count(str(r.ended_by) for r in executions),
            "killed": sum(r.returncode is not None and r.returncode < 0 for r in executions),
            "max_exit_lag_seconds": round(
                max((r.exit_lag_seconds or 0.0 for r in executions), default=0.0), 1
            ),
        },
        "operator_actions": dict(sorted(operator.items())),
        "logs": str(outcome.log_dir) if outcome.log_dir else None,
        "dossiers": [str(path) for path in outcome.dossiers],
        "drain": {
            "ended": outcome.drain.ended,
            "stalled": outcome.drain.stalled,
            "seconds": round(outcome.drain.seconds, 1),
            "unended": outcome.drain.unended[:50],
        },
        "evidence": {
            "status_records": outcome.records_read,
            "dead_letters": outcome.dead_letters_read,
            "outputs_read": outcome.outputs_read,
            "watcher_reads": outcome.watcher_reads,
        },
        "violations": {
            "count": len(outcome.result.violations),
            "by_rule": _count(str(v.rule) for v in outcome.result.violations),
            "list": [v.as_dict() for v in outcome.result.violations],
        },
        "timings_seconds": {k: round(v, 1) for k, v in outcome.timings.items()},
    }


def _count(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def report_text(outcome: CampaignOutcome, data: dict[str, Any] | None = None) -> str:
    """The report for a terminal: the figures, then every violation (the first 100)."""
    data = data or report_data(outcome)
    tasks, faults, executions = data["tasks"], data["faults"], data["executions"]
    lines = [
        f"chaos campaign: seed {data['seed']}, {data['emulator']} Pub/Sub emulator, "
        f"{data['timings_seconds']['total']:.0f}s in all",
        f"tasks: {tasks['accepted']} accepted of {tasks['submitted']} submitted "
        f"{tasks['by_answer']}; {tasks['replacements']} replacements; "
        f"unaccepted that ran: {tasks['unaccepted_that_ran'] or 'none'}",
        f"outcomes: {data['outcomes']}",
    ]
    for task_type, counts in data["outcomes_by_type"].items():
        lines.append(f"  {task_type:<24} {counts}")
    lines.append(
        f"faults: {faults['applied']} applied of {faults['planned']} planned "
        f"(submissions and faults {data['timings_seconds'].get('submit_and_faults', 0):.0f}s)"
    )
    lines.append(f"  {'kind':<18} {'applied':>7} {'skipped':>7} {'failed':>6} {'seconds':>8}")
    for kind, tally in faults["by_kind"].items():
        lines.append(
            f"  {kind:<18} {tally['applied']:>7} {tally['skipped']:>7} {tally['failed']:>6} "
            f"{tally['seconds']:>8.1f}"
        )
    lines += [f"  failed: {failure}" for failure in faults["failures"]]
    lines += [
        f"executions: {executions['count']}, exit codes {executions['exit_codes']}, ended by "
        f"{executions['ended_by']}, {executions['killed']} killed, longest exit lag "
        f"{executions['max_exit_lag_seconds']}s",
        f"operator actions: {data['operator_actions'] or 'none'}",
        f"drain: {'every task ended' if data['drain']['ended'] else 'NOT every task ended'} "
        f"in {data['drain']['seconds']}s",
        f"evidence: {data['evidence']}",
        f"timings (s): {data['timings_seconds']}",
        f"violations: {data['violations']['count']} {data['violations']['by_rule'] or ''}",
    ]
    if outcome.dossiers:
        lines.append(f"  dossiers of the tasks concerned: {outcome.dossiers[0].parent}/")
    for violation in outcome.result.violations[:100]:
        lines.append(f"  {violation.describe()}")
    if len(outcome.result.violations) > 100:
        lines.append(f"  ... {len(outcome.result.violations) - 100} more in the JSON report")
    return "\n".join(lines)


def write_report(outcome: CampaignOutcome, path: Path) -> dict[str, Any]:
    """Write the JSON report to path; the data written."""
    data = report_data(outcome)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return data
