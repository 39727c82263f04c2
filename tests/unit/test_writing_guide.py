"""docs/writing-a-task-type.md stays true: its module and its test are run as written."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "writing-a-task-type.md"
# "`path`:" on a line of its own, then the fenced block that holds that file.
FILE_BLOCK = re.compile(r"^`([\w/.]+\.py)`:\n\n```python\n(.*?)```", re.S | re.M)


def guide_files() -> dict[str, str]:
    return {path: body for path, body in FILE_BLOCK.findall(GUIDE.read_text())}


def test_the_guide_declares_a_module_and_its_test_and_nothing_else():
    assert sorted(guide_files()) == ["tasks/word_count.py", "tests/tasks/test_word_count.py"]


def test_the_guides_task_and_test_run_as_written(tmp_path):
    files = guide_files()
    (tmp_path / "word_count.py").write_text(files["tasks/word_count.py"])
    (tmp_path / "test_word_count.py").write_text(files["tests/tasks/test_word_count.py"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_word_count.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
    # The module is found by name, as TASK_MODULES=example_tasks,word_count finds it.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "from taskcore.tasks import load_task_modules;"
            "r = load_task_modules(['example_tasks', 'word_count']);"
            "print(sorted(r.names()), r.get('word_count').time_limit_seconds)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split("]")[0].count("word_count") == 1
    assert loaded.stdout.strip().endswith("120.0")


def test_every_other_python_block_of_the_guide_parses():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) == 3
    for block in blocks:
        ast.parse(block)
