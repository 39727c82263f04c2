"""`taskctl dev` run directly (not through `make run`) still finds the checkout's task modules."""

from __future__ import annotations

import importlib
import os
import sys

from devstack.stack import _put_task_modules_on_path


def test_the_checkouts_tasks_folder_is_importable_here_and_in_what_the_stack_starts(
    tmp_path, monkeypatch
):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_own_tasks.py").write_text("ANSWER = 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setattr(sys, "path", list(sys.path))

    _put_task_modules_on_path()
    _put_task_modules_on_path()  # twice: no duplicate entry

    folder = str((tmp_path / "tasks").resolve())
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [folder, "/elsewhere"]
    assert importlib.import_module("my_own_tasks").ANSWER == 42
    sys.modules.pop("my_own_tasks")


def test_no_tasks_folder_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")

    _put_task_modules_on_path()

    assert os.environ["PYTHONPATH"] == "/elsewhere"
