"""Log lines: Cloud Logging's structured JSON, without the keys that carry nothing."""

from __future__ import annotations

import io
import json
import logging

import google.cloud.logging_v2
import pytest
from flask import Flask

from background_worker import execution
from background_worker.worker import ExecutionSummary
from taskcore.logs import SOURCE_LOCATION, TRACE, configure_logging, task_context


@pytest.fixture
def lines():
    """Configure logging into a buffer (as a fresh process would); the lines written so far."""
    google.cloud.logging_v2._instrumentation_emitted = False  # as in a new process
    stream = io.StringIO()
    configure_logging("INFO", {"cloud_run_execution": "exec-1"}, stream=stream, project_id="p")
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger().handlers.clear()


def test_a_line_has_severity_message_fixed_and_task_fields_and_nothing_empty(lines):
    with task_context(task_id="t-1", task_type="word_count"):
        logging.getLogger("x").info("ran %s", "it", extra={"json_fields": {"duration_ms": 5}})

    assert lines() == [
        {
            "severity": "INFO",
            "message": "ran it",
            "cloud_run_execution": "exec-1",
            "task_id": "t-1",
            "task_type": "word_count",
            "duration_ms": 5,
        }
    ], "no library diagnostics line, no empty trace/span/httpRequest/labels/sourceLocation"


def test_warnings_and_errors_say_where_in_the_code_they_come_from(lines):
    logging.getLogger("background_worker.acks").warning("ack failed")

    (line,) = lines()
    assert line["severity"] == "WARNING"
    assert line[SOURCE_LOCATION]["function"] == (
        "test_warnings_and_errors_say_where_in_the_code_they_come_from"
    )
    assert line["logging.googleapis.com/labels"] == {"python_logger": "background_worker.acks"}


def test_an_exception_keeps_its_traceback_in_the_message(lines):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("handler failed")

    (line,) = lines()
    assert line["severity"] == "ERROR"
    assert (
        line["message"].startswith("handler failed\nTraceback")
        and "ValueError: boom" in line["message"]
    )


def test_a_request_line_links_to_its_cloud_run_trace(lines):
    app = Flask(__name__)
    header = {"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"}
    with app.test_request_context("/submit-task", method="POST", headers=header):
        logging.getLogger("task_api").info("accepted")

    (line,) = lines()
    assert line[TRACE] == "projects/p/traces/105445aa7843bc8bf206b12000100000"
    assert line["logging.googleapis.com/trace_sampled"] is True
    assert line["httpRequest"]["requestMethod"] == "POST"


def test_an_idle_execution_is_one_short_line_with_the_summary_fields(lines, monkeypatch):
    idle = ExecutionSummary(stop_reason="idle", duration_seconds=3.004)
    monkeypatch.setattr("background_worker.worker.drain_subscription", lambda *a, **k: idle)
    monkeypatch.setattr(execution, "install_shutdown_handlers", lambda shutdown: None)
    monkeypatch.setattr(execution, "configure_logging", lambda *a, **k: None)

    assert execution.run_execution() == execution.ExitCode.OK

    (line,) = lines()
    assert line["message"] == "execution done: no tasks (idle after 3.004s)"
    assert line["event"] == "execution_summary" and line["stop_reason"] == "idle"
    assert {"received", "processed", "failed", "dead_lettered", "duration_seconds"} <= set(line)
    assert "duplicates" not in line and "abandoned" not in line, "an idle run's zeros are left out"
    assert len(json.dumps(line)) < 300


def test_a_busy_execution_names_its_counts_and_reports_every_count(lines, monkeypatch):
    busy = ExecutionSummary(received=4, stop_reason="idle", duration_seconds=2.0)
    busy.outcomes.update(succeeded=2, duplicate=1, retried=1)
    monkeypatch.setattr("background_worker.worker.drain_subscription", lambda *a, **k: busy)
    monkeypatch.setattr(execution, "install_shutdown_handlers", lambda shutdown: None)
    monkeypatch.setattr(execution, "configure_logging", lambda *a, **k: None)

    execution.run_execution()

    (line,) = lines()
    assert line["message"] == "execution done: 2 processed, 1 failed, 0 dead-lettered (idle)"
    assert line["duplicates"] == 1 and line["processed"] == 2
    assert line["abandoned"] == 0 and line["cancelled"] == 0, "every count, zeros included"
