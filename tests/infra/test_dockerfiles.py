"""The two images: pinned base, non-root, the project installed from pyproject.toml's pins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from infra_contract import REPO

DOCKERFILES = {
    "api": REPO / "task-api" / "Dockerfile",
    "worker": REPO / "background-worker" / "Dockerfile",
}
COMMANDS = {"api": ["taskctl", "api"], "worker": ["taskctl", "worker"]}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        logical.append(current)
        current = ""
    if current:
        logical.append(current)
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def stages(path: Path) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """ARG defaults declared before the first FROM, and the instructions of each stage."""
    args, all_stages = {}, []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            all_stages.append([(keyword, rest)])
        elif all_stages:
            all_stages[-1].append((keyword, rest))
        elif keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip().strip('"')
    return args, all_stages


def base_image(from_args: str, args: dict[str, str]) -> tuple[str, str | None]:
    """(image, stage alias) of a FROM, with ${ARG} defaults substituted."""
    parts = [p for p in from_args.split() if not p.startswith("--platform")]
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
    alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
    return image, alias


@pytest.fixture(params=sorted(DOCKERFILES))
def image(request) -> str:
    return request.param


def test_base_images_are_pinned_to_an_exact_version(image):
    args, all_stages = stages(DOCKERFILES[image])
    assert all_stages, "no FROM"
    aliases = set()
    for stage in all_stages:
        ref, alias = base_image(stage[0][1], args)
        if ref in aliases:
            continue
        name, _, digest = ref.partition("@")
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        pinned_tag = re.match(r"\d+\.\d+\.\d+", tag)
        assert pinned_tag or digest.startswith("sha256:"), f"{ref} is not pinned to a version"
        if alias:
            aliases.add(alias)


def test_final_stage_runs_as_non_root(image):
    _, all_stages = stages(DOCKERFILES[image])
    users = [rest for keyword, rest in all_stages[-1] if keyword == "USER"]
    assert users, "the final stage sets no USER, so the container runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"


def test_runs_unbuffered_with_its_command(image):
    _, all_stages = stages(DOCKERFILES[image])
    final = all_stages[-1]
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env), "logs must not sit in a buffer"
    cmds = [rest for keyword, rest in final if keyword in ("CMD", "ENTRYPOINT")]
    assert cmds and json.loads(cmds[-1]) == COMMANDS[image]


def test_installs_the_project_from_its_pins(image):
    _, all_stages = stages(DOCKERFILES[image])
    runs = [rest for stage in all_stages for keyword, rest in stage if keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "no pip install"
    for run in installs:
        # Only the project itself: every version is pinned in pyproject.toml.
        assert re.search(r"pip install (--no-cache-dir )?\.$", run), run
    copies = [rest for stage in all_stages for keyword, rest in stage if keyword == "COPY"]
    sources = {src.rstrip("/") for c in copies if "--from" not in c for src in c.split()[:-1]}
    assert {"pyproject.toml", "shared"} <= sources


def test_build_context_has_what_the_image_copies(image):
    """Every COPY source exists at the repo root and .dockerignore does not drop it."""
    _, all_stages = stages(DOCKERFILES[image])
    ignored = dockerignore()
    copies = [rest for stage in all_stages for keyword, rest in stage if keyword == "COPY"]
    sources = [src for c in copies if "--from" not in c for src in c.split()[:-1]]
    for src in sources:
        name = src.rstrip("/")
        assert (REPO / name).exists(), f"COPY {src}: no such file in the build context"
        assert name not in ignored, f"COPY {src}, but .dockerignore excludes it"


def dockerignore() -> set[str]:
    path = REPO / ".dockerignore"
    assert path.is_file(), "no .dockerignore: .venv and .git would be sent to the builder"
    lines = [line.strip() for line in path.read_text().splitlines()]
    return {line.rstrip("/") for line in lines if line and not line.startswith(("#", "!"))}


def test_dockerignore_excludes_venv_and_git():
    ignored = dockerignore()
    assert ".venv" in ignored
    assert ".git" in ignored
