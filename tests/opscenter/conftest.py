"""Fixtures: a database URL for SQLite and, when the server binaries are there, a throwaway PostgreSQL."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import pytest

from opscenter import pgtemp



def pytest_configure(config: pytest.Config) -> None:
    # starlette's TestClient still works on httpx; its deprecation notice is not about our code
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")

_counter = itertools.count()


def pg_skip_reason() -> str | None:
    reason = pgtemp.unavailable_reason()
    return f"POSTGRES TEST SKIPPED: {reason}" if reason else None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgtemp.PgTemp]:
    """One throwaway cluster for the session (fsync off: tests, not the benchmark)."""
    reason = pg_skip_reason()
    if reason:
        print(f"\n*** {reason} ***")
        pytest.skip(reason)
    cluster = pgtemp.PgTemp(fsync=False)
    try:
        cluster.start()
    except RuntimeError as exc:
        pytest.skip(f"POSTGRES TEST SKIPPED: the throwaway cluster did not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: pgtemp.PgTemp) -> str:
    """A fresh database in the session's cluster."""
    name = f"t{next(_counter)}"
    pg_cluster.psql(f"CREATE DATABASE {name}")
    return pg_cluster.url.replace(f"/{pg_cluster.dbname}?", f"/{name}?")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'center.db'}"
    return str(request.getfixturevalue("pg_url"))
