"""Fixtures: the Terraform and the compose file, parsed once per session."""

from __future__ import annotations

import pytest
import yaml
from infra_contract import COMPOSE_FILE, INFRA, Terraform


@pytest.fixture(scope="session")
def tf() -> Terraform:
    assert INFRA.is_dir(), "infra/ is missing"
    return Terraform.load(INFRA)


@pytest.fixture(scope="session")
def compose() -> dict:
    with COMPOSE_FILE.open() as handle:
        return yaml.safe_load(handle)
