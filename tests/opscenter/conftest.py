"""Fixtures: a database URL for SQLite and, when the server binaries are there, PostgreSQL (``pg_url``,
tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # starlette's TestClient still works on httpx; its deprecation notice is not about our code
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'center.db'}"
    return str(request.getfixturevalue("pg_url"))
