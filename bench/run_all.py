"""`make bench`: every benchmark under bench/, one after another, each printing medians.

.venv/bin/python bench/run_all.py [--only drain,api,...] [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> script and the arguments that give medians of several runs.
BENCHMARKS = {
    "drain": ["drain.py"],
    "api": ["api.py"],
    "dlq": ["dlq_replay.py"],
    "pubsub-emulator": ["pubsub_emulator.py"],
    "gcs-emulator": ["gcs_write_rate.py", "--compare"],
    # 100,000 tasks seeded through the journal (~6 min), then the dashboard's routes timed.
    "admin-index": ["admin_index.py"],
    # The real API's dispatcher and the Jobs stand-in: submit-to-start latency while idle,
    # a burst, delayed tasks' lateness, and idle meaning no worker process (~5 min).
    "on-demand": ["on_demand.py"],
    # The dispatcher on a fake clock: burst, trickle, diurnal against fixed schedules (~8 min).
    "dispatcher-sim": ["dispatcher_sim.py"],
    # Peak RSS of one execution running the biggest built-in tasks the API accepts (~2 min).
    "task-memory": ["task_memory.py"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated names: " + ", ".join(BENCHMARKS)
    )
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    failed = []
    for name in chosen:
        script, *extra = BENCHMARKS[name]
        if not (HERE / script).exists():
            print(f"== {name}: {script} is missing", flush=True)
            failed.append(name)
            continue
        print(f"\n== {name}: {script} {' '.join(extra)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *extra], cwd=HERE.parent).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
