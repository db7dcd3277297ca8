"""Shared fixtures for the IPS rule tests: the ET Open snapshot, loaded once per session."""
from __future__ import annotations

import glob
import time
from pathlib import Path

import pytest

from filters.ips.netspec import Variables
from filters.ips.rules import LoadResult, load_classification, load_files

ET_RULES = Path("/work/shared/peer/et-open/rules")


@pytest.fixture(scope="session")
def et_open() -> tuple[LoadResult, float]:
    """(LoadResult, seconds) for every ET Open rule file; skips loudly when the snapshot is absent."""
    files = sorted(glob.glob(str(ET_RULES / "*.rules")))
    if not files:
        pytest.skip(f"ET OPEN RULES ABSENT: no *.rules under {ET_RULES} - ET checks NOT RUN")
    classes = load_classification(ET_RULES / "classification.config")
    start = time.perf_counter()
    result = load_files(files, Variables.suricata_defaults(), classification=classes)
    return result, time.perf_counter() - start
