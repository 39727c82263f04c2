"""Commands as the docs print them: fenced shell blocks, split into argument lists.

The deploy guide and Terraform's `next_steps` output are meant to be pasted. These helpers
turn them into argument vectors the tests can check (a replay names what to replay) or run
(a curl answers 2xx from the real API).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY_GUIDE = REPO / "docs" / "deploy.md"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)


@dataclass(frozen=True)
class Command:
    """One shell command: its arguments, where it is written, and its text."""

    argv: tuple[str, ...]
    source: str
    text: str

    def __str__(self) -> str:
        return f"{self.source}: {self.text}"

    @property
    def program(self) -> str:
        return Path(self.argv[0]).name if self.argv else ""


def code_blocks(markdown: str, lang: str | None = None) -> list[tuple[int, str, str]]:
    """(line, language, body) of every fenced block, optionally of one language only."""
    blocks = []
    for match in _FENCE.finditer(markdown):
        if lang is None or match.group("lang") == lang:
            line = markdown.count("\n", 0, match.start()) + 1
            indent = match.group("indent")
            body = "\n".join(
                raw[len(indent) :] if raw.startswith(indent) else raw
                for raw in match.group("body").splitlines()
            )
            blocks.append((line, match.group("lang"), body))
    return blocks


def shell_commands(script: str, source: str) -> list[Command]:
    """The commands of a shell snippet: continuation lines joined, comments dropped.

    `$(...)` substitutions stay inside their argument (unquoted ones are kept whole), each
    side of a pipe is a command, `A=b cmd` environment prefixes are dropped, and a line that
    only assigns or exports is skipped.
    """
    commands = []
    for logical in re.sub(r"\\\n\s*", " ", script).splitlines():
        text = logical.strip()
        if not text or text.startswith("#"):
            continue
        for argv in _pipeline(_split(text)):
            while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
                argv = argv[1:]
            if argv and argv[0] != "export":
                commands.append(Command(tuple(argv), source, text))
    return commands


def _pipeline(argv: list[str]) -> list[list[str]]:
    """The commands of `a | b && c; d`: each part on its own."""
    parts: list[list[str]] = [[]]
    for arg in argv:
        if arg in ("|", "&&", "||", ";"):
            parts.append([])
        else:
            parts[-1].append(arg)
    return [part for part in parts if part]


def _split(text: str) -> list[str]:
    # shlex would split an unquoted $(a | b) apart: hide substitutions first.
    hidden: list[str] = []

    def hide(match: re.Match) -> str:
        hidden.append(match.group(0))
        return f"\0{len(hidden) - 1}\0"

    masked = re.sub(r"\$\([^()]*\)", hide, text)
    argv = shlex.split(masked, comments=True)
    return [re.sub(r"\0(\d+)\0", lambda m: hidden[int(m.group(1))], arg) for arg in argv]


def guide_commands(path: Path = DEPLOY_GUIDE) -> list[Command]:
    """Every command in the guide's `sh` blocks, in the order they appear."""
    commands = []
    for line, _, body in code_blocks(path.read_text(), "sh"):
        commands.extend(shell_commands(body, f"{path.relative_to(REPO)}:{line}"))
    return commands


def taskctl_args(command: Command) -> list[str] | None:
    """The arguments after `taskctl` (or `.venv/bin/taskctl`), or None for other programs."""
    if command.program != "taskctl":
        return None
    return list(command.argv[1:])


@dataclass(frozen=True)
class HttpCall:
    """A curl command as an HTTP request: method, path (after the API's base URL), headers."""

    method: str
    path: str
    headers: dict[str, str]
    data: str | None
    form: dict[str, str]


def curl_request(command: Command, base_urls: tuple[str, ...]) -> HttpCall | None:
    """The request a curl command makes to the API, or None if it calls something else."""
    if command.program != "curl":
        return None
    method, headers, data, form, url = None, {}, None, {}, None
    args = iter(command.argv[1:])
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg in ("-d", "--data", "--data-raw"):
            data = next(args)
        elif arg == "-F":
            name, _, value = next(args).partition("=")
            form[name] = value
        elif arg.startswith("-"):
            raise AssertionError(f"{command}: the test does not know curl option {arg}")
        else:
            url = arg
    base = next((b for b in base_urls if url and url.startswith(b)), None)
    if base is None:
        return None
    method = method or ("POST" if data is not None or form else "GET")
    return HttpCall(method, url[len(base) :], headers, data, form)
