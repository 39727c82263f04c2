"""A stand-in for the worker as a job's task: records what it saw, then behaves as told.

Each attempt writes <record-dir>/<execution>-<index>-<attempt>.json when it starts (its
environment, pid, argv and time.monotonic(), which every process on the machine shares),
"ended" into it when it ends normally, and "sigterm" when SIGTERM arrives.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record-dir", required=True, type=Path)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--exit", type=int, default=0, dest="exit_code")
    parser.add_argument("--fail-attempts", type=int, default=0, help="fail attempts below this")
    parser.add_argument("--fail-index", type=int, default=None, help="this task always fails")
    parser.add_argument("--ignore-sigterm", action="store_true")
    args = parser.parse_args()

    index = int(os.environ["CLOUD_RUN_TASK_INDEX"])
    attempt = int(os.environ["CLOUD_RUN_TASK_ATTEMPT"])
    record_path = args.record_dir / f"{os.environ['CLOUD_RUN_EXECUTION']}-{index}-{attempt}.json"
    record = {
        "env": dict(os.environ),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "argv": sys.argv[1:],
        "started": time.monotonic(),
    }

    def save() -> None:
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(record_path)

    def on_sigterm(signum, frame):
        record["sigterm"] = time.monotonic()
        record["sigterm_at"] = time.time()  # wall clock, to compare with the Execution's times
        save()
        if not args.ignore_sigterm:
            sys.exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    save()
    print(f"task {index} attempt {attempt} says hello", flush=True)
    deadline = time.monotonic() + args.sleep
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
    record["ended"] = time.monotonic()
    save()
    if attempt < args.fail_attempts or index == args.fail_index:
        print(f"task {index} attempt {attempt} fails on purpose", file=sys.stderr, flush=True)
        return 1
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
