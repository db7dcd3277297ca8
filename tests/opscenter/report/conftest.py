"""Fixtures for the report tests: a signing key, and a center database holding a simulated month (made
once per session through the center's own functions: lab/reportsim.py)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.reportsim import Plan, Result, simulate
from opscenter.db import Database
from opscenter.report.period import Month
from opscenter.report.signing import SigningKey, ensure_key

MONTH = Month.parse("2026-11")
INTERVAL = 1800.0  # a coarse heartbeat keeps the simulated month quick; the rule scales with it


@dataclass
class SimMonth:
    db: Database
    url: str
    month: Month
    plan: Plan
    result: Result
    late_plan: Plan  # a contract whose service starts mid-month
    late: Result


def at(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """Naive UTC of a Japan-time moment of MONTH (day is 1-based)."""
    return MONTH.start + dt.timedelta(days=day - 1, hours=hour, minutes=minute)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("reportkey")
    ensure_key(d)
    return d


@pytest.fixture(scope="session")
def key(key_dir: Path) -> SigningKey:
    return SigningKey.load(key_dir / "report-signing.key")


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimMonth:
    path = tmp_path_factory.mktemp("reportdb") / "center.db"
    url = f"sqlite:///{path}"
    db = Database(url)
    db.create_tables()
    plan = Plan("C-1001", "VCR116W-0001", MONTH, interval=INTERVAL,
                outages=[(at(10, 3), at(10, 7, 30))],
                unprotected=[(at(16, 0), at(16, 3))],
                portcheck_failed=[(at(21), at(22))],
                restart_at=at(13), alarms_per_day=30, lan_hosts=15, seed=7)
    result = simulate(db, plan)
    late_plan = Plan("C-1002", "VCR116W-0002", MONTH, interval=INTERVAL, activated=at(20, 10),
                     alarms_per_day=0, mail_uninspected=False, seed=8)
    late = simulate(db, late_plan)
    return SimMonth(db, url, MONTH, plan, result, late_plan, late)
