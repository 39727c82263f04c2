"""Google's own python-pubsub system tests, run against the local Pub/Sub emulators.

The sdist of the google-cloud-pubsub version pinned in pyproject.toml carries `tests/system.py`,
the tests Google runs against real Pub/Sub. This fetches it once into a git-ignored cache,
then runs its gRPC tests against each emulator with what they expect of a cloud project: a
project id, application default credentials (a fake authorized-user file: the emulators take
no credentials, but `google.auth.default()` must find some) and PUBSUB_EMULATOR_HOST.

    python -m devstack.pubsub_system_tests [--emulator python|google|both] [-- PYTEST_ARGS]

(`make pubsub-system-tests`). Every test must pass on ours; Google's emulator may fail only
the tests in KNOWN_GOOGLE_FAILURES, for the reason given there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import click

from devstack.emulators import start_pubsub_emulator
from devstack.emulators.google_pubsub import find_google_pubsub_emulator
from taskcore.errors import EmulatorError

PACKAGE = "google-cloud-pubsub"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "pubsub-system-tests"
PROJECT_ID = "pubsub-system-tests"
# The emulators speak gRPC only; system.py runs each test over gRPC and REST.
SELECTION = "not rest"
# system.py waits up to 60 s in some tests; a test still running after this is hung.
TEST_TIMEOUT_SECONDS = 300
# Variables of the caller's environment that could point the tests at a real project or
# enable the tests that need Google's CI service accounts.
_SCRUBBED_PREFIXES = ("GOOGLE_", "PUBSUB_", "KOKORO_", "CLOUDSDK_")

_NO_IAM = "Google's emulator answers UNIMPLEMENTED to google.iam.v1.IAMPolicy"
# Each is also pinned down by a conformance test (tests/conformance), on both emulators.
KNOWN_GOOGLE_FAILURES = {
    "test_managing_topic_iam_policy[grpc]": _NO_IAM,
    "test_managing_subscription_iam_policy[grpc-grpc]": _NO_IAM,
    # Fails most runs, all five of flaky's tries: the client nacks what it did not process
    # after its stream closed, and Google's emulator leases those messages to the next
    # stream without sending them until the lease runs out (60 s, past the test's 5 s).
    "test_streaming_pull_blocking_shutdown[grpc-grpc]": (
        "Google's emulator holds back messages nacked after a stream ended from the next "
        "stream until their lease expires"
    ),
}


def pinned_version(pyproject: Path, package: str = PACKAGE) -> str:
    """The version pyproject.toml pins package to (`package==X` in project.dependencies)."""
    if not pyproject.is_file():
        raise click.ClickException(f"no {pyproject}: run this from a clone of the project")
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pattern = re.compile(rf"{re.escape(package)}\s*==\s*([A-Za-z0-9.+!-]+)", re.IGNORECASE)
    for requirement in dependencies:
        match = pattern.fullmatch(requirement.strip())
        if match:
            return match.group(1)
    raise click.ClickException(f"{pyproject} pins no exact version of {package}")


def extract_system_tests(sdist: Path, dest: Path) -> Path:
    """Copy `<top>/tests/system.py` out of an sdist to dest/tests/system.py; that path.

    Only that one file is read from the archive, so no member can be written anywhere else.
    The sdist has no conftest.py on the way to it: the file is all the tests need.
    """
    with tarfile.open(sdist) as archive:
        members = [
            m
            for m in archive.getmembers()
            if m.isfile() and re.fullmatch(r"[^/]+/tests/system\.py", m.name)
        ]
        if len(members) != 1:
            raise click.ClickException(f"{sdist.name} holds no single tests/system.py")
        data = archive.extractfile(members[0]).read()
    target = dest / "tests" / "system.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


def fetch_system_tests(version: str, cache: Path) -> Path:
    """tests/system.py of PACKAGE==version: from the cache, else from its sdist on PyPI."""
    dest = cache / f"{PACKAGE}-{version}"
    system_py = dest / "tests" / "system.py"
    if system_py.is_file():
        return system_py
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as download:
        command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={version}"]
        command += ["--no-binary", ":all:", "--no-deps", "--quiet", "--dest", download]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        sdists = sorted(Path(download).glob("*.tar.gz"))
        if result.returncode != 0 or len(sdists) != 1:
            raise click.ClickException(
                f"could not download the {PACKAGE} {version} sdist:\n{result.stderr.strip()}"
            )
        return extract_system_tests(sdists[0], dest)


def write_fake_adc(path: Path) -> Path:
    """An authorized-user credentials file google.auth.default() accepts without a network."""
    fake = "emulator-only"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": fake,
                "client_secret": fake,
                "refresh_token": fake,
            }
        )
    )
    return path


@dataclass
class Outcome:
    """What one run of system.py did: test names by result, failure messages by name."""

    kind: str
    seconds: float = 0.0
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def unexpected_failures(self) -> dict[str, str]:
        """Failures this emulator must not have."""
        allowed = KNOWN_GOOGLE_FAILURES if self.kind == "google" else {}
        return {name: why for name, why in self.failed.items() if name not in allowed}

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{self.kind}: {len(self.passed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped in {self.seconds:.0f} s"
        )


def parse_junit(path: Path, kind: str) -> Outcome:
    """The outcome recorded in a pytest --junitxml report; a test's last record wins."""
    results: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        status, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = "skipped" if child.tag == "skipped" else "failed"
                message = (child.get("message") or child.text or "").strip().splitlines()
                message = message[0] if message else child.tag
                break
        results[case.get("name", "")] = (status, message)
    outcome = Outcome(kind)
    for name, (status, message) in results.items():
        if status == "passed":
            outcome.passed.append(name)
        elif status == "failed":
            outcome.failed[name] = message
        else:
            outcome.skipped[name] = message
    return outcome


def scrubbed_env(emulator_host: str, adc: Path) -> dict[str, str]:
    """The caller's environment, pointed at the emulator and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(adc)
    env["GOOGLE_CLOUD_PROJECT"] = PROJECT_ID
    env["PUBSUB_EMULATOR_HOST"] = emulator_host
    return env


def with_selection(pytest_args: tuple[str, ...]) -> list[str]:
    """pytest_args with SELECTION and-ed into any -k of theirs (a later -k would replace it)."""
    args, expressions = [], [SELECTION]
    rest = iter(pytest_args)
    for arg in rest:
        if arg == "-k":
            expressions.append(next(rest, ""))
        elif arg.startswith("-k"):
            expressions.append(arg[2:].removeprefix("="))
        else:
            args.append(arg)
    return ["-k", " and ".join(f"({e})" for e in expressions if e), *args]


def run_against(kind: str, system_py: Path, work: Path, pytest_args: tuple[str, ...]) -> Outcome:
    """Start the emulator of kind, run system.py's gRPC tests against it, stop it."""
    work.mkdir(parents=True, exist_ok=True)
    ini = work / "pytest.ini"
    # Our own pytest settings (pyproject.toml) are for our tests, not Google's.
    ini.write_text(f"[pytest]\ntimeout = {TEST_TIMEOUT_SECONDS}\n")
    report = work / f"{kind}-junit.xml"
    report.unlink(missing_ok=True)
    adc = write_fake_adc(work / "fake-adc.json")
    command = [sys.executable, "-m", "pytest", str(system_py), *with_selection(pytest_args)]
    command += ["-c", str(ini), "--rootdir", str(system_py.parent), "-p", "no:cacheprovider"]
    command += [f"--junitxml={report}", "-q", "-ra"]
    click.echo(f"== {PACKAGE} system tests on the {kind} Pub/Sub emulator")
    handle = start_pubsub_emulator(choice=kind, log_path=str(work / f"{kind}-emulator.log"))
    started = time.monotonic()
    try:
        subprocess.run(command, env=scrubbed_env(handle.env_value, adc), check=False)
    finally:
        handle.stop()
    if not report.is_file():
        raise click.ClickException(f"pytest wrote no report for the {kind} emulator")
    outcome = parse_junit(report, kind)
    outcome.seconds = time.monotonic() - started
    return outcome


def report(outcomes: list[Outcome]) -> bool:
    """Print what each run did; whether every run did what it must."""
    ok = True
    click.echo("== summary")
    for outcome in outcomes:
        click.echo(outcome.summary())
        unexpected = outcome.unexpected_failures()
        for name, message in sorted(outcome.failed.items()):
            known = "" if name in unexpected else f" (known: {KNOWN_GOOGLE_FAILURES[name]})"
            click.echo(f"  FAILED {name}: {message}{known}")
        if not outcome.passed and not outcome.failed:
            click.echo(f"  no test ran on the {outcome.kind} emulator")
            ok = False
        if unexpected:
            ok = False
    return ok


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--emulator",
    type=click.Choice(["python", "google", "both"]),
    default="both",
    show_default=True,
    help="Which emulator to run the tests against (both: Google's where installed).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_CACHE,
    show_default=True,
    help="Where the sdist's tests, reports and emulator logs are kept.",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def main(emulator: str, cache: Path, pytest_args: tuple[str, ...]) -> None:
    """Run google-cloud-pubsub's own system tests against the local Pub/Sub emulators."""
    version = pinned_version(REPO_ROOT / "pyproject.toml")
    installed = importlib.metadata.version(PACKAGE)
    if installed != version:
        raise click.ClickException(
            f"{PACKAGE} {installed} is installed but {version} is pinned: run `make install`"
        )
    system_py = fetch_system_tests(version, cache)
    kinds = ["python", "google"] if emulator == "both" else [emulator]
    if emulator == "both" and find_google_pubsub_emulator() is None:
        click.echo("Google's Pub/Sub emulator is not installed: running on ours only")
        kinds = ["python"]
    try:
        outcomes = [run_against(kind, system_py, cache / "runs", pytest_args) for kind in kinds]
    except EmulatorError as exc:
        raise click.ClickException(str(exc)) from exc
    if not report(outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
