"""The README stays true: its settings table is the one the code generates."""

from __future__ import annotations

from pathlib import Path

from taskcore.settings import settings_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_the_settings_module():
    text = README.read_text()
    start = text.index("<!-- settings:start -->\n") + len("<!-- settings:start -->\n")
    end = text.index("<!-- settings:end -->")
    assert text[start:end].strip() == settings_table_markdown(), (
        "regenerate it: .venv/bin/taskctl settings --markdown"
    )


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make run" in text and "make test" in text
