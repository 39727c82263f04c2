"""`field=value` arguments, shared by `taskctl submit` and `taskctl dlq replay --set`."""

from __future__ import annotations

import json

import click


def parse_field(text: str) -> tuple[str, object]:
    """Parse field=value; the value is JSON when it parses as JSON, else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not field=value")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name, value
