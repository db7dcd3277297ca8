"""Stored reports and the monthly job: due month, claims, idempotent passes (one process and several),
failures retried, the listing the control panel uses, the report command."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from opscenter.cli import main
from opscenter.db import Database
from opscenter.report import schedule, store
from opscenter.report.schedule import ReportScheduler, due_month, run_due
from opscenter.report.signing import verify
from opscenter.settings import Settings
from tests.opscenter.report.conftest import MONTH, SimMonth

JST = dt.timezone(dt.timedelta(hours=9))


def jst(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=JST).astimezone(dt.timezone.utc).replace(tzinfo=None)


def test_due_month():
    assert due_month(jst(2026, 12, 1, 1, 59), 2).key == "2026-10"  # before report_hour: last month's pass
    assert due_month(jst(2026, 12, 1, 2, 0), 2).key == "2026-11"
    assert due_month(jst(2026, 12, 31, 23, 0), 2).key == "2026-11"
    assert due_month(jst(2027, 1, 1, 0, 30), 0).key == "2026-12"
    assert due_month(dt.datetime(2026, 11, 30, 15, 30), 0).key == "2026-11"  # 00:30 JST on 1 December


def test_claims(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    db.create_tables()
    now = dt.datetime(2026, 12, 1)
    assert store.claim(db, "C-1", "2026-11", now) and not store.claim(db, "C-1", "2026-11", now)
    assert store.claim(db, "C-1", "2026-11", now + store.STALE + dt.timedelta(seconds=1))  # a crashed generator
    store.fail(db, "C-1", "2026-11", "boom")
    assert store.claim(db, "C-1", "2026-11", now)  # attempt 3
    store.fail(db, "C-1", "2026-11", "boom")
    assert not store.claim(db, "C-1", "2026-11", now)  # MAX_ATTEMPTS reached
    [row] = store.list_reports(db, "C-1")
    assert row["status"] == "failed" and row["attempts"] == 3 and row["error"] == "boom"
    assert store.report_file(db, "C-1", "2026-11", "pdf") is None


def _settings(sim: SimMonth, key_dir: Path, **kw: object) -> Settings:
    return Settings.model_validate({"db": sim.url, "report_key": str(key_dir / "report-signing.key"), **kw})


def test_monthly_pass_is_idempotent_and_listed(sim: SimMonth, key_dir: Path, key):  # type: ignore[no-untyped-def]
    settings = _settings(sim, key_dir)
    now = MONTH.end + dt.timedelta(hours=3)
    assert store.contracts_due(sim.db, MONTH) == ["C-1001", "C-1002"]
    first = run_due(settings, month=MONTH, now=now, workers=1)
    assert first.done == ["C-1001", "C-1002"] and not first.failed
    again = run_due(settings, month=MONTH, now=now, workers=1)
    assert again.done == [] and store.contracts_due(sim.db, MONTH) == []
    rows = store.list_reports(sim.db, "C-1001")
    assert [r["month"] for r in rows] == ["2026-11"] and rows[0]["status"] == "done"
    assert rows[0]["summary"]["threats"] > 0 and rows[0]["key_id"] == key.key_id
    pdf = store.report_file(sim.db, "C-1001", "2026-11", "pdf")
    record = store.report_file(sim.db, "C-1001", "2026-11", "record")
    assert pdf and pdf.startswith(b"%PDF-") and b"<html" in store.report_file(sim.db, "C-1001", "2026-11", "html")
    assert verify(record, trusted=[key.public]).digest == rows[0]["record_sha256"]
    # October: only C-1001 was in service; made by two processes
    oct_ = MONTH.previous()
    par = run_due(settings, month=oct_, now=now, workers=2)
    assert par.done == ["C-1001"] and store.contracts_due(sim.db, oct_) == []


def test_a_failing_report_is_recorded_and_retried(sim: SimMonth, key_dir: Path, monkeypatch: pytest.MonkeyPatch):
    settings = _settings(sim, key_dir)
    month = MONTH.next()
    import opscenter.report.render as render

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(render, "render_report", boom)
    res = run_due(settings, month=month, now=MONTH.end, workers=1)
    assert res.failed == {"C-1001": "no fonts today", "C-1002": "no fonts today"}
    assert store.list_reports(sim.db, "C-1001", month=month.key)[0]["status"] == "failed"
    monkeypatch.undo()
    assert run_due(settings, month=month, now=MONTH.end, workers=1).done == ["C-1001", "C-1002"]


def test_report_command_writes_the_three_files(sim: SimMonth, key_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "out"
    rc = main(["report", "--db", sim.url, "--contract", "C-1002", "--month", "2026-11", "--out", str(out),
               "--key", str(key_dir / "report-signing.key")])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["operating-record-C-1002-2026-11.json", "report-C-1002-2026-11.html", "report-C-1002-2026-11.pdf"]
    record = out / "operating-record-C-1002-2026-11.json"
    assert main(["verify-report", str(record), "--pubkey", str(key_dir / "report-signing.pub")]) == 0
    assert main(["report", "--db", sim.url, "--contract", "C-404", "--month", "2026-11",
                 "--key", str(key_dir / "report-signing.key")]) == 1
    assert main(["report", "--db", sim.url, "--month", "2026-11"]) == 2
    capsys.readouterr()
    assert main(["report", "--db", sim.url, "--list", "--json"]) == 0
    assert "C-1001" in capsys.readouterr().out


def test_scheduler_process_starts_and_stops(tmp_path: Path, key_dir: Path):
    base = {"db": f"sqlite:///{tmp_path / 's.db'}"}
    assert ReportScheduler.start(Settings.model_validate(base)) is None  # no key: off
    assert ReportScheduler.start(Settings.model_validate({**base, "report_key": str(key_dir / "report-signing.key"),
                                                          "report_schedule": False})) is None
    s = ReportScheduler.start(Settings.model_validate({**base, "report_key": str(key_dir / "report-signing.key")}),
                              poll=0.5)
    assert s is not None and s.proc.is_alive()
    s.stop()
    assert not s.proc.is_alive() and s.proc.exitcode is not None
    assert schedule.POLL >= 60
