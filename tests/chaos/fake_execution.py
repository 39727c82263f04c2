"""A stand-in for a worker execution, for the runner's tests: it logs as the worker does.

python fake_execution.py work 3 0.1     3 task_succeeded lines, 0.1 s idle, summary, exit 0
python fake_execution.py hog 30 0.02    30 MiB at once, a work line, then 1 MiB per 0.02 s
                                        (up to 400 MiB: a limit that fails to act fails the test,
                                        not the machine)
python fake_execution.py stay           run until SIGTERM, then exit 0 at once
python fake_execution.py stubborn       ignore SIGTERM; run until killed
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

MIB = 1024 * 1024


def log(event: str, **fields) -> None:
    execution = os.environ.get("CLOUD_RUN_EXECUTION")
    print(json.dumps({"event": event, "cloud_run_execution": execution, **fields}), flush=True)


def touched(size: int) -> bytearray:
    """size bytes, every page written so they are resident."""
    block = bytearray(size)
    for offset in range(0, size, 4096):
        block[offset] = 1
    return block


def main(mode: str, *args: str) -> int:
    if mode == "work":
        tasks, idle = int(args[0]), float(args[1])
        for i in range(tasks):
            log("task_succeeded", task_id=f"t{i}")
        time.sleep(idle)
        env = {name: os.environ.get(name) for name in ("TOPIC_NAME", "PUBSUB_EMULATOR_HOST")}
        log("execution_summary", processed=tasks, env=env)
        return 0
    if mode == "hog":
        held = [touched(int(args[0]) * MIB)]
        log("task_succeeded", task_id="ready")
        while len(held) < 400:
            held.append(touched(MIB))
            time.sleep(float(args[1]))
        while True:
            time.sleep(1)
    if mode == "stay":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    elif mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log("task_succeeded", task_id="started")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
