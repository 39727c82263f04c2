"""Terraform itself evaluating the parts of infra/ that need no provider.

infra/variables.tf and infra/queues.tf hold only variables and locals: how each queue is
resolved from var.queues (fallbacks, names, QUEUES, the workers' log filter) and the checks
the resources' preconditions report. The google provider cannot be downloaded here, so the
resources are never planned; these two files are, in a scratch directory, by the real
terraform CLI: what the tests read is what Terraform computes, validations included.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
# The files a scratch configuration copies: variables and the locals built from them only.
PROVIDERLESS_FILES = ("variables.tf", "queues.tf")
_VARS = ("-input=false", "-no-color", "-var", "project_id=my-project")


def terraform_binary() -> str:
    """The terraform CLI, or skip the calling test (it is not a Python dependency)."""
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed: infra/queues.tf is not evaluated")
    return binary


def queue_locals_names() -> list[str]:
    """Every local infra/queues.tf declares."""
    options = hcl2.SerializationOptions(explicit_blocks=False, with_comments=False)
    with (INFRA / "queues.tf").open() as handle:
        parsed = hcl2.load(handle, serialization_options=options)
    return [name for block in parsed.get("locals", []) for name in block]


@dataclass(frozen=True)
class Evaluation:
    """What `terraform apply` of the provider-less files gave: the locals, or the errors."""

    locals: dict[str, Any]
    errors: str

    def __getitem__(self, name: str) -> Any:
        assert not self.errors, f"terraform refused the variables:\n{self.errors}"
        return self.locals[name]


# Terraform asks HashiCorp for newer versions unless told not to: the tests stay offline.
OFFLINE = {"CHECKPOINT_DISABLE": "1"}


def _run(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [terraform_binary(), *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **OFFLINE},
    )


@functools.cache
def evaluate(tfvars: str = "") -> Evaluation:
    """The locals of infra/queues.tf for these tfvars (HCL text), as Terraform computes them.

    Cached per tfvars: the files do not change while the tests run.
    """
    with tempfile.TemporaryDirectory(prefix="queues-tf-") as scratch:
        directory = Path(scratch)
        for name in PROVIDERLESS_FILES:
            shutil.copy(INFRA / name, directory / name)
        outputs = "".join(
            f'output "{name}" {{\n  value = local.{name}\n}}\n' for name in queue_locals_names()
        )
        (directory / "outputs.tf").write_text(outputs)
        (directory / "test.auto.tfvars").write_text(tfvars)
        init = _run(directory, "init", "-input=false", "-no-color")
        assert init.returncode == 0, init.stdout + init.stderr
        apply = _run(directory, "apply", "-auto-approve", *_VARS)
        if apply.returncode != 0:
            return Evaluation({}, apply.stderr or apply.stdout)
        shown = _run(directory, "output", "-json", "-no-color")
        assert shown.returncode == 0, shown.stderr
        values = {name: item["value"] for name, item in json.loads(shown.stdout).items()}
        return Evaluation(values, "")
