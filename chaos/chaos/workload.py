"""The campaign's tasks, drawn from one seed: which type, which payload, how it must end.

    specs = draw_tasks(seed=7, count=1000, inputs=["chaos-0.txt", ...])
    specs[0].task_type, specs[0].fields            # the same for the same seed and mix

The mix is a weight per task type (`DEFAULT_MIX`); the memory hog's weight is 0 unless
asked for (`memory_hog_weight`), until the worker isolates such tasks. Each draw uses its own
`random.Random(f"{seed}:task:{index}")`, so changing the mix of later tasks, or their count,
leaves earlier tasks as they were.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.tasks import CPU_TIME_LIMIT

DEFAULT_MIX: Mapping[str, float] = {
    "chaos_quick": 30,
    "chaos_sleepy": 8,
    "chaos_flaky": 12,
    "chaos_always_transient": 5,
    "chaos_permanent": 6,
    "chaos_data_error": 6,
    "chaos_cpu": 6,
    "chaos_memory_hog": 0,
    "file_processing": 10,
    "data_transformation": 12,
}
# Sleepy tasks: this share sleeps past the ack deadline (10 s in the campaign's settings).
LONG_SLEEP_SHARE = 0.2
LONG_SLEEP_SECONDS = (11.0, 18.0)
SHORT_SLEEP_SECONDS = (1.0, 5.0)
# CPU tasks: this share is asked to overrun its time limit (each costs 5 runs of the limit).
CPU_OVERRUN_SHARE = 0.02
CPU_SECONDS = (0.02, 0.3)
MEMORY_HOG_MEGABYTES = 2048

# Uploaded once before the campaign, read by file_processing tasks (name → content).
INPUT_FILES: Mapping[str, bytes] = {
    "chaos-notes.txt": b"one line\ntwo words here\n\tthree\n" * 40,
    "chaos-table.csv": b"id,category,value\n"
    + b"".join(b"%d,beta,%d.5\n" % (i, i) for i in range(200)),
    "chaos-blob.bin": bytes(range(256)) * 64,
    "chaos-unicode.txt": "caf\u00e9 \u00fcber \u65e5\u672c\n".encode() * 100,
}


@dataclass(frozen=True)
class TaskSpec:
    """One submission of the campaign: its index, tag, type and payload fields."""

    index: int
    tag: str
    task_type: str
    fields: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The POST /submit-task body."""
        return {"task_type": self.task_type, **self.fields}


def mix_with(memory_hog_weight: float = 0.0, overrides: Mapping[str, float] | None = None):
    """DEFAULT_MIX with the memory hog's weight (and any other) set."""
    mix = dict(DEFAULT_MIX)
    mix["chaos_memory_hog"] = memory_hog_weight
    mix.update(overrides or {})
    for name, weight in mix.items():
        if name not in DEFAULT_MIX:
            raise ValueError(f"unknown task type in the mix: {name!r}")
        if weight < 0:
            raise ValueError(f"weight of {name} cannot be negative")
    if not any(weight > 0 for weight in mix.values()):
        raise ValueError("the mix has no task type with a positive weight")
    return mix


def tag_of(seed: int, index: int) -> str:
    return f"s{seed}-{index:06d}"


def draw_tasks(
    seed: int,
    count: int,
    mix: Mapping[str, float] | None = None,
    inputs: Sequence[str] = tuple(INPUT_FILES),
) -> list[TaskSpec]:
    """count tasks drawn from seed and mix (the same arguments, the same tasks)."""
    return [draw_task(seed, index, mix, inputs) for index in range(count)]


def draw_task(
    seed: int,
    index: int,
    mix: Mapping[str, float] | None = None,
    inputs: Sequence[str] = tuple(INPUT_FILES),
) -> TaskSpec:
    """Task number index of the seed's campaign: the same for the same seed, index and mix."""
    mix = mix if mix is not None else mix_with()
    names = sorted(name for name, weight in mix.items() if weight > 0)
    rng = random.Random(f"{seed}:task:{index}")
    task_type = rng.choices(names, weights=[mix[name] for name in names])[0]
    tag = tag_of(seed, index)
    return TaskSpec(index, tag, task_type, _fields(rng, task_type, tag, inputs))


def _fields(rng: random.Random, task_type: str, tag: str, inputs: Sequence[str]) -> dict:
    if task_type == "file_processing":
        return {
            "filename": rng.choice(list(inputs)),
            "processing_time": rng.choice([0, 0, 0, 0.5, 1.5]),
        }
    if task_type == "data_transformation":
        fields: dict[str, Any] = {
            "dataset_size": rng.randint(10, 300),
            "transformation": rng.choice(["normalize", "aggregate", "filter"]),
        }
        if fields["transformation"] == "aggregate":
            fields["group_by"] = "category"
        elif fields["transformation"] == "filter":
            fields["filter"] = {"field": "quantity", "op": "gt", "value": rng.randint(1, 99)}
        return fields
    fields = {"tag": tag, "parts": rng.randint(1, 4)}
    if task_type == "chaos_sleepy":
        span = LONG_SLEEP_SECONDS if rng.random() < LONG_SLEEP_SHARE else SHORT_SLEEP_SECONDS
        fields.update(seconds=round(rng.uniform(*span), 3), parts=rng.randint(2, 4))
    elif task_type == "chaos_flaky":
        fields.update(fail_first=rng.randint(0, 3), seconds=round(rng.uniform(1.2, 2.0), 3))
    elif task_type == "chaos_data_error":
        fields.update(exponent=rng.randint(309, 5000))
    elif task_type == "chaos_cpu":
        if rng.random() < CPU_OVERRUN_SHARE:
            seconds = CPU_TIME_LIMIT + rng.uniform(1.0, 4.0)
        else:
            seconds = rng.uniform(*CPU_SECONDS)
        fields.update(seconds=round(seconds, 3))
    elif task_type == "chaos_memory_hog":
        fields.update(megabytes=MEMORY_HOG_MEGABYTES)
    return fields
