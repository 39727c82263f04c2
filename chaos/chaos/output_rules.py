"""The outputs a succeeded record names: one run's complete set, intact, and saying so.

Every named output is under outputs/<task_id>/<run_id>/ of one run, exists at its named
generation with its named CRC32C; a chaos task's parts each carry that run id, the task id
and the submitted payload's hash, every part once; file_processing's metadata names the
processed output the record names.
"""

from __future__ import annotations

import re

from chaos.evidence import Evidence, output_json
from chaos.tasks import CHAOS_TYPES, parse_chaos_payload, part_name, payload_hash
from chaos.violations import Rule, Violation
from taskcore.status import TaskStatus


def check_outputs(
    evidence: Evidence, task_id: str, task_type: str, fields, record: TaskStatus
) -> list[Violation]:
    """What is wrong with the outputs a succeeded record names (nothing: [])."""
    found: list[Violation] = []

    def flag(rule: Rule, subject: str, text: str) -> None:
        found.append(Violation(rule, subject, text))

    refs = record.outputs
    if not refs:
        flag(Rule.OUTPUTS_INCOMPLETE, task_id, "succeeded record names no outputs")
        return found
    pattern = re.compile(
        rf"^gs://{re.escape(evidence.bucket_name)}/outputs/{re.escape(task_id)}/([^/]+)/(.+)$"
    )
    runs = {}
    for ref in refs:
        match = pattern.match(ref.uri)
        if match is None or match.group(2) != ref.name:
            flag(Rule.OUTPUTS_MIXED_RUNS, task_id, f"{ref.name}: {ref.uri} is no run's output")
            continue
        runs[ref.name] = match.group(1)
    if len(set(runs.values())) > 1:
        flag(
            Rule.OUTPUTS_MIXED_RUNS,
            task_id,
            f"outputs of {len(set(runs.values()))} runs: {sorted(runs.items())}",
        )
    contents = {}
    for ref in refs:
        obj = evidence.outputs.get((ref.uri, ref.generation))
        if obj is None or obj.found == "missing":
            flag(Rule.OUTPUT_MISSING, task_id, f"{ref.uri}#{ref.generation} is gone")
        elif obj.found != "yes":
            flag(
                Rule.OUTPUT_GENERATION_CHANGED,
                task_id,
                f"{ref.uri} no longer has generation {ref.generation}",
            )
        elif ref.crc32c is not None and obj.crc32c != ref.crc32c:
            flag(
                Rule.OUTPUT_CORRUPT,
                task_id,
                f"{ref.uri}#{ref.generation}: crc32c {obj.crc32c}, record says {ref.crc32c}",
            )
        else:
            contents[ref.name] = output_json(obj)
    if task_type in CHAOS_TYPES:
        names = [ref.name for ref in refs]
        _chaos_parts(flag, task_id, task_type, fields, names, runs, contents)
    elif task_type == "file_processing" and "metadata.json" in contents:
        named = {ref.uri for ref in refs}
        produced = (contents["metadata.json"] or {}).get("output_uri")
        if produced not in named:
            flag(
                Rule.OUTPUTS_MIXED_RUNS,
                task_id,
                f"metadata.json names {produced}, which the record does not: {sorted(named)}",
            )
    return found


def _chaos_parts(flag, task_id, task_type, fields, names, runs, contents) -> None:
    """Each part says it is this run's, of this task and payload, and every part is there."""
    parts = [c for c in contents.values() if isinstance(c, dict)]
    if len(parts) != len(contents):
        flag(Rule.OUTPUT_CORRUPT, task_id, "an output is not the JSON object it wrote")
    if fields is None and parts:
        fields = parts[0].get("payload")  # a task the API did not accept: its own word
    expected_hash = payload_hash(parse_chaos_payload(task_type, fields)) if fields else None
    expected_parts = parse_chaos_payload(task_type, fields).parts if fields else None
    for name, content in contents.items():
        if not isinstance(content, dict):
            continue
        problems = []
        if content.get("run_id") != runs.get(name):
            problems.append(f"run_id {content.get('run_id')} under run {runs.get(name)}")
        if content.get("task_id") != task_id:
            problems.append(f"task_id {content.get('task_id')}")
        if content.get("payload_hash") != expected_hash:
            problems.append("payload_hash is not the submitted payload's")
        if problems:
            flag(Rule.OUTPUTS_MIXED_RUNS, task_id, f"{name}: " + "; ".join(problems))
    if expected_parts is not None:
        wanted = {part_name(i) for i in range(expected_parts)}
        if set(names) != wanted or len(names) != len(wanted):
            flag(
                Rule.OUTPUTS_INCOMPLETE,
                task_id,
                f"the record names {sorted(names)}; {sorted(wanted)} expected",
            )
