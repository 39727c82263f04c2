"""A worker execution with one injected fault, run as a subprocess by the fault tests.

FAULT_SCENARIO picks where it hangs (so the test can SIGKILL it exactly there):
- hang_before_write: inside the handler, before any output is written;
- write_one_output_then_hang: file_processing writes its first output, then hangs;
- hang_before_ack: after outputs and status are durable, just before the ack.
On reaching the point it creates FAULT_SIGNAL_FILE, then blocks until killed.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from background_worker.acks import Settler
from background_worker.execution import run_execution
from tests.registries import builtin_registry


def _reached() -> None:
    Path(os.environ["FAULT_SIGNAL_FILE"]).touch()
    threading.Event().wait()  # blocks until the test kills this process


def main() -> int:
    scenario = os.environ["FAULT_SCENARIO"]
    registry = builtin_registry()
    if scenario == "hang_before_write":
        registry = registry.with_handlers(data_transformation=lambda ctx, payload: _reached())
    elif scenario == "write_one_output_then_hang":
        real = registry.get("file_processing").handler

        def write_one_then_hang(ctx, payload):
            remember = ctx.outputs._remember  # called as each output is complete

            def remember_then_hang(*args):
                uri = remember(*args)
                _reached()
                return uri

            ctx.outputs._remember = remember_then_hang
            real(ctx, payload)

        registry = registry.with_handlers(file_processing=write_one_then_hang)
    elif scenario == "hang_before_ack":
        original_ack = Settler.ack

        def ack_then_hang(self, ack_id):
            _reached()
            return original_ack(self, ack_id)

        Settler.ack = ack_then_hang
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    import background_worker.execution as execution_module

    execution_module.load_task_modules = lambda modules: registry
    return run_execution()


if __name__ == "__main__":
    sys.exit(main())
