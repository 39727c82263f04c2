"""python -m chaos run --seed S --tasks N --faults F --emulator python|google [--duration D]
[--report path]: one fault campaign (chaos.campaign), its report on stdout (and as JSON).

Exit code 0 when the checker found no violation, 1 when it found some, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chaos.campaign import DEFAULT_RATE, CampaignConfig, run_campaign
from chaos.report import report_data, report_text, write_report


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one campaign and check it")
    run.add_argument("--seed", type=int, required=True, help="seed of the tasks and faults")
    run.add_argument("--tasks", type=int, required=True, help="tasks the API must accept")
    run.add_argument("--faults", type=int, required=True, help="faults to inject, at least")
    run.add_argument("--emulator", choices=("python", "google"), default="python")
    run.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds of submissions and faults (default: tasks / {DEFAULT_RATE:g} per second)",
    )
    run.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    run.add_argument("--parallelism", type=int, default=3, help="worker executions at once")
    run.add_argument(
        "--memory-hog-weight",
        type=float,
        default=0.0,
        help="weight of chaos_memory_hog in the mix (0 until the worker isolates such tasks)",
    )
    run.add_argument(
        "--execution-memory-mb",
        type=int,
        default=None,
        help="standing memory limit of each execution, as a Cloud Run Job's memory setting",
    )
    run.add_argument("--drain-timeout", type=float, default=600.0)
    run.add_argument("--log-dir", type=Path, default=None, help="logs (default .cache/chaos/…)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = CampaignConfig(
        seed=args.seed,
        tasks=args.tasks,
        faults=args.faults,
        emulator=args.emulator,
        duration=args.duration,
        parallelism=args.parallelism,
        memory_hog_weight=args.memory_hog_weight,
        execution_memory_mb=args.execution_memory_mb,
        drain_timeout=args.drain_timeout,
        log_dir=args.log_dir,
    )
    outcome = run_campaign(config)
    data = write_report(outcome, args.report) if args.report else report_data(outcome)
    print(report_text(outcome, data))
    return 0 if outcome.result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
