"""The runner of Google's python-pubsub system tests: everything short of running them."""

from __future__ import annotations

import importlib.metadata
import io
import subprocess
import tarfile

import click
import google.auth
import pytest
from click.testing import CliRunner
from google.oauth2 import credentials as oauth2_credentials

from devstack import pubsub_system_tests as runner
from taskcore.errors import EmulatorError

SYSTEM_PY = b"def test_nothing():\n    pass\n"


def test_the_pin_is_read_from_pyproject():
    pinned = runner.pinned_version(runner.REPO_ROOT / "pyproject.toml")
    assert pinned == importlib.metadata.version(runner.PACKAGE)


def test_only_an_exact_pin_counts(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["google-cloud-pubsub-extra==9.9", "google-cloud-pubsub == 2.1.0"]\n'
    )
    assert runner.pinned_version(pyproject) == "2.1.0"
    pyproject.write_text('[project]\ndependencies = ["google-cloud-pubsub>=2"]\n')
    with pytest.raises(click.ClickException):
        runner.pinned_version(pyproject)


def _sdist(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_only_system_py_leaves_the_sdist(tmp_path):
    sdist = _sdist(
        tmp_path / "pkg-1.0.tar.gz",
        {
            "pkg-1.0/tests/system.py": SYSTEM_PY,
            "pkg-1.0/tests/unit/conftest.py": b"raise SystemExit",
            "../escaped.py": b"raise SystemExit",
            "pkg-1.0/other/tests/system.py": b"raise SystemExit",
        },
    )
    dest = tmp_path / "out"
    extracted = runner.extract_system_tests(sdist, dest)
    assert extracted == dest / "tests" / "system.py"
    assert extracted.read_bytes() == SYSTEM_PY
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py")) == [
        "out/tests/system.py"
    ]


def test_an_sdist_without_system_tests_is_refused(tmp_path):
    sdist = _sdist(tmp_path / "pkg-1.0.tar.gz", {"pkg-1.0/setup.py": b""})
    with pytest.raises(click.ClickException):
        runner.extract_system_tests(sdist, tmp_path / "out")


def test_a_cached_copy_is_used_without_downloading(tmp_path, monkeypatch):
    cached = tmp_path / f"{runner.PACKAGE}-1.0" / "tests" / "system.py"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(SYSTEM_PY)

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although the cache holds the tests")

    monkeypatch.setattr(subprocess, "run", no_download)
    assert runner.fetch_system_tests("1.0", tmp_path) == cached


def test_a_failed_download_says_why(tmp_path, monkeypatch):
    def failing_pip(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"]
        assert "--no-binary" in command and "--no-deps" in command
        return subprocess.CompletedProcess(command, 1, "", "No matching distribution found")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(click.ClickException, match="No matching distribution"):
        runner.fetch_system_tests("0.0.0", tmp_path)
    assert not (tmp_path / f"{runner.PACKAGE}-0.0.0").exists()


def test_the_fake_credentials_satisfy_google_auth_default(tmp_path, monkeypatch):
    adc = runner.write_fake_adc(tmp_path / "adc.json")
    for name, value in runner.scrubbed_env("127.0.0.1:1", adc).items():
        monkeypatch.setenv(name, value)
    credentials, project = google.auth.default()
    assert isinstance(credentials, oauth2_credentials.Credentials)
    assert project == runner.PROJECT_ID


def test_the_tests_see_the_emulator_and_no_real_project(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "a-real-project")
    monkeypatch.setenv("KOKORO_GFILE_DIR", "/secrets")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "elsewhere:1")
    monkeypatch.setenv("PATH_KEPT", "yes")
    env = runner.scrubbed_env("127.0.0.1:1234", tmp_path / "adc.json")
    assert env["GOOGLE_CLOUD_PROJECT"] == runner.PROJECT_ID
    assert env["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:1234"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == str(tmp_path / "adc.json")
    assert "KOKORO_GFILE_DIR" not in env
    assert env["PATH_KEPT"] == "yes"


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
  <testcase classname="system" name="test_publish_messages[grpc]" time="0.1"/>
  <testcase classname="system" name="test_managing_topic_iam_policy[grpc]" time="0.1">
    <failure message="google.api_core.exceptions.MethodNotImplemented: 501">trace</failure>
  </testcase>
  <testcase classname="system.TestStreamingPull" name="test_streaming_pull_ack_deadline[grpc-grpc]">
    <error message="">setup went wrong
second line</error>
  </testcase>
  <testcase classname="system.TestBasicRBAC" name="test_viewer_role_can_list_resources[grpc-grpc]">
    <skipped type="pytest.skip" message="Requires Kokoro environment"/>
  </testcase>
</testsuite></testsuites>
"""


def test_a_junit_report_is_read_into_an_outcome(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    outcome = runner.parse_junit(path, "python")
    assert outcome.passed == ["test_publish_messages[grpc]"]
    assert outcome.failed == {
        "test_managing_topic_iam_policy[grpc]": "google.api_core.exceptions.MethodNotImplemented: 501",
        "test_streaming_pull_ack_deadline[grpc-grpc]": "setup went wrong",
    }
    assert outcome.skipped == {
        "test_viewer_role_can_list_resources[grpc-grpc]": "Requires Kokoro environment"
    }


def test_ours_must_pass_everything_and_google_may_fail_only_the_known_tests(tmp_path, capsys):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    ours, google = runner.parse_junit(path, "python"), runner.parse_junit(path, "google")
    assert set(ours.unexpected_failures()) == set(ours.failed)
    assert set(google.unexpected_failures()) == {"test_streaming_pull_ack_deadline[grpc-grpc]"}
    assert not runner.report([ours])
    google.failed.pop("test_streaming_pull_ack_deadline[grpc-grpc]")
    assert runner.report([google])
    assert "known: Google's emulator answers UNIMPLEMENTED" in capsys.readouterr().out
    # Google's emulator failing only its known tests is a success even when nothing passed
    # (a -k that picked just those); a run in which no test ran at all is not.
    google.passed.clear()
    assert runner.report([google])
    assert not runner.report([runner.Outcome("python")])
    assert "no test ran on the python emulator" in capsys.readouterr().out


def test_a_missing_pyproject_is_explained(tmp_path):
    with pytest.raises(click.ClickException, match="clone of the project"):
        runner.pinned_version(tmp_path / "pyproject.toml")


@pytest.fixture
def offline_main(tmp_path, monkeypatch):
    """main() with the tests already fetched and each run recorded instead of started."""
    monkeypatch.setattr(runner, "fetch_system_tests", lambda version, cache: tmp_path / "system.py")
    runs: list[str] = []

    def fake_run(kind, system_py, work, pytest_args):
        runs.append(kind)
        return runner.Outcome(kind, passed=["test_publish_messages[grpc]"])

    monkeypatch.setattr(runner, "run_against", fake_run)
    return runs


def test_both_means_ours_alone_where_googles_emulator_is_missing(offline_main, monkeypatch):
    monkeypatch.setattr(runner, "find_google_pubsub_emulator", lambda: None)
    result = CliRunner().invoke(runner.main, [])
    assert result.exit_code == 0, result.output
    assert offline_main == ["python"]
    assert "not installed: running on ours only" in result.output


def test_both_runs_ours_then_googles(offline_main, monkeypatch):
    monkeypatch.setattr(runner, "find_google_pubsub_emulator", lambda: "/sdk/bin/emulator")
    result = CliRunner().invoke(runner.main, ["--emulator", "both"])
    assert result.exit_code == 0, result.output
    assert offline_main == ["python", "google"]


def test_an_emulator_that_cannot_start_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "fetch_system_tests", lambda version, cache: tmp_path / "system.py")

    def no_emulator(**kwargs):
        raise EmulatorError("Google's Pub/Sub emulator is not installed")

    monkeypatch.setattr(runner, "start_pubsub_emulator", no_emulator)
    result = CliRunner().invoke(runner.main, ["--emulator", "google", "--cache", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: Google's Pub/Sub emulator is not installed" in result.output


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((), ["-k", "(not rest)"]),
        (("-x",), ["-k", "(not rest)", "-x"]),
        (("-k", "iam", "-x"), ["-k", "(not rest) and (iam)", "-x"]),
        (("-kpublish or iam",), ["-k", "(not rest) and (publish or iam)"]),
        (("-k=iam",), ["-k", "(not rest) and (iam)"]),
    ],
)
def test_a_selection_of_the_caller_narrows_the_grpc_tests_never_widens_them(given, expected):
    assert runner.with_selection(given) == expected
