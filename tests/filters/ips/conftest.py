"""Shared fixtures for the IPS rule tests: the ET Open snapshot, loaded once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from filters.ips.netspec import Variables
from filters.ips.rule_parser import LoadResult, load_classification, load_files
from tests.shared_data import SharedData


@pytest.fixture(scope="session")
def et_open_files(shared_data: SharedData) -> list[Path]:
    """Every ET Open rule file of the shared data (required: fails under CI when absent)."""
    return shared_data.glob("peer/et-open/rules", "*.rules")


@pytest.fixture(scope="session")
def et_open(et_open_files: list[Path]) -> LoadResult:
    """Every ET Open rule file, loaded with ET's classification (load time: the benchmark's)."""
    classes = load_classification(et_open_files[0].parent / "classification.config")
    return load_files(et_open_files, Variables.suricata_defaults(), classification=classes)
