"""Cloud Logging queries as this project writes them, parsed and run against log entries.

Log-based metrics (infra/monitoring.tf) and the queries in the docs select the pipeline's
JSON log lines by `jsonPayload.event` and read fields such as `jsonPayload.duration_ms`. This
module reads those queries (the subset of the Logging query language they use: comparisons,
AND, OR, NOT, parentheses and value lists such as `F=("a" OR "b")`) and evaluates them on
entries built from real log lines, so the tests can tell whether a query still selects what
it was written for. Only stdlib and taskcore: both the static infra tests and the integration
tests import it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskcore.events import ATTEMPT_EVENTS, FAILURE_EVENTS, Event

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))

# What each log-based metric in infra/monitoring.tf counts, by Terraform resource name. A new
# metric states its events here, and the tests hold its filter to them.
METRIC_EVENTS: Mapping[str, frozenset[Event]] = {
    "tasks_succeeded": frozenset({Event.TASK_SUCCEEDED}),
    "tasks_failed": frozenset(FAILURE_EVENTS),
    "task_duration": frozenset(ATTEMPT_EVENTS),
}

# StructuredLogHandler's keys that Cloud Logging lifts out of jsonPayload into the entry.
_ENTRY_KEYS = ("severity", "logging.googleapis.com/")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<string>"(?:[^"\\]|\\.)*") |
        (?P<op>>=|<=|!=|=~|!~|=|<|>|:) |
        (?P<word>[^\s()"=<>!:~]+)
    )""",
    re.X,
)


class QueryError(ValueError):
    """Raised when a query uses syntax this reader does not understand."""


@dataclass(frozen=True)
class Comparison:
    """`field op value`, or `field op ("a" OR "b")` (any of the values)."""

    field: str
    op: str
    values: tuple[str, ...]

    def matches(self, entry: Mapping[str, Any]) -> bool:
        found, value = lookup(entry, self.field)
        if not found:
            return False
        return any(_compare(value, self.op, wanted) for wanted in self.values)


@dataclass(frozen=True)
class BoolOp:
    """AND / OR over operands, or NOT over one."""

    op: str
    operands: tuple[Any, ...]

    def matches(self, entry: Mapping[str, Any]) -> bool:
        if self.op == "AND":
            return all(o.matches(entry) for o in self.operands)
        if self.op == "OR":
            return any(o.matches(entry) for o in self.operands)
        return not self.operands[0].matches(entry)


Node = Comparison | BoolOp


def _compare(actual: Any, op: str, wanted: str) -> bool:
    if op == ":":
        return wanted.lower() in str(actual).lower()
    if op in ("=", "!="):
        equal = _number(actual) == _number(wanted) if _is_number(wanted) else str(actual) == wanted
        return equal if op == "=" else not equal
    if op in (">=", "<=", ">", "<"):
        if not (_is_number(actual) and _is_number(wanted)):
            return False
        a, b = _number(actual), _number(wanted)
        return {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[op]
    raise QueryError(f"operator {op} is not supported")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def lookup(entry: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted field path in an entry."""
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise QueryError(f"cannot read {text[position:]!r}")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "string":
            value = json.loads(value)
        elif kind == "word" and value in ("AND", "OR", "NOT"):
            kind = value
        tokens.append((kind, value))
        position = match.end()
    return tokens


class _Parser:
    # The Logging query language binds NOT tightest, then OR, then AND (and juxtaposition
    # means AND): `a OR b AND c` is `(a OR b) AND c`.
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            raise QueryError(f"expected {kind} at token {self.at} of {self.text!r}")
        value = self.tokens[self.at][1]
        self.at += 1
        return value

    def parse(self) -> Node:
        node = self.and_expr()
        if self.peek() is not None:
            raise QueryError(f"unexpected {self.tokens[self.at][1]!r} in {self.text!r}")
        return node

    def and_expr(self) -> Node:
        operands = [self.or_expr()]
        while self.peek() not in (None, "rparen", "OR"):
            if self.peek() == "AND":
                self.take("AND")
            operands.append(self.or_expr())
        return operands[0] if len(operands) == 1 else BoolOp("AND", tuple(operands))

    def or_expr(self) -> Node:
        operands = [self.unary()]
        while self.peek() == "OR":
            self.take("OR")
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else BoolOp("OR", tuple(operands))

    def unary(self) -> Node:
        if self.peek() == "NOT":
            self.take("NOT")
            return BoolOp("NOT", (self.unary(),))
        if self.peek() == "lparen":
            self.take("lparen")
            node = self.and_expr()
            self.take("rparen")
            return node
        field = self.take("word")
        op = self.take("op")
        if self.peek() == "lparen":
            self.take("lparen")
            values = [self.value()]
            while self.peek() == "OR":
                self.take("OR")
                values.append(self.value())
            self.take("rparen")
            return Comparison(field, op, tuple(values))
        return Comparison(field, op, (self.value(),))

    def value(self) -> str:
        if self.peek() == "string":
            return self.take("string")
        return self.take("word")


def parse_query(text: str) -> Node:
    """The query as a tree of comparisons; QueryError for syntax this reader does not know."""
    return _Parser(text).parse()


def comparisons(node: Node) -> Iterator[Comparison]:
    """Every comparison in a query."""
    if isinstance(node, Comparison):
        yield node
    else:
        for operand in node.operands:
            yield from comparisons(operand)


def event_values(node: Node) -> set[str]:
    """The values a query compares jsonPayload.event with."""
    return {v for c in comparisons(node) if c.field == "jsonPayload.event" for v in c.values}


def payload_fields(node: Node) -> set[str]:
    """The jsonPayload fields a query reads."""
    prefix = "jsonPayload."
    return {c.field[len(prefix) :] for c in comparisons(node) if c.field.startswith(prefix)}


def extracted_field(extractor: str) -> str:
    """The jsonPayload field of a metric extractor, `EXTRACT(jsonPayload.F)`."""
    match = re.fullmatch(r"EXTRACT\(jsonPayload\.([A-Za-z0-9_]+)\)", extractor)
    if not match:
        raise QueryError(f"extractor {extractor!r} is not EXTRACT(jsonPayload.FIELD)")
    return match.group(1)


# --- where the queries are written ---------------------------------------------------------


@dataclass(frozen=True)
class DocumentedQuery:
    """A `gcloud logging read '<query>'` command in a Markdown document."""

    path: Path
    line: int
    query: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.query}"


def documented_queries(paths: Iterable[Path] = DOCUMENTS) -> list[DocumentedQuery]:
    """Every `gcloud logging read '<query>'` in the files (Markdown, or Terraform strings)."""
    found = []
    for path in paths:
        text = path.read_text()
        if path.suffix == ".tf":
            text = text.replace('\\"', '"')  # the query inside a Terraform string
        for match in re.finditer(r"gcloud logging read\s+'([^']*)'", text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(DocumentedQuery(path, line, match.group(1)))
    return found


def mentioned_event_filters(text: str) -> set[str]:
    """Event values in every `jsonPayload.event` comparison of a text, however it is quoted.

    Catches filters outside any query the other readers see: comments, descriptions, heredocs,
    and Terraform strings (which escape the quotes).
    """
    text = text.replace('\\"', '"')
    values = set()
    for match in re.finditer(r'jsonPayload\.event\s*(?:=|!=|:)\s*(\([^)]*\)|"[^"]*")', text):
        values |= set(re.findall(r'"([^"]*)"', match.group(1)))
    return values


# --- log lines as Cloud Logging stores them --------------------------------------------------


def entry_from_line(line: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any]:
    """A StructuredLogHandler JSON line as the entry Cloud Logging makes of it."""
    payload = {k: v for k, v in line.items() if not k.startswith(_ENTRY_KEYS)}
    return {
        "resource": dict(resource),
        "severity": line.get("severity", "DEFAULT"),
        "jsonPayload": payload,
    }


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among a process's output lines (anything else is skipped)."""
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                lines.append(value)
    return lines
