"""Stored reports (table ``reports``): one row per contract and month, claimed before it is generated so
that the schedule, several processes and a re-run make each report once.

A claim is an ``INSERT ... ON CONFLICT DO NOTHING`` of a ``running`` row; a row left ``running`` longer
than ``STALE`` (a crashed generator) or ``failed`` fewer than ``MAX_ATTEMPTS`` times may be claimed
again with a conditional UPDATE. ``done`` rows are final for the schedule; ``vcr-opscenter report
--store`` replaces one on purpose.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, or_, select, update

from opscenter.db import Database, contracts, reports, utcnow
from opscenter.report.period import Month, iso_z

STALE = dt.timedelta(hours=1)
MAX_ATTEMPTS = 3
KINDS = {"pdf": "pdf", "html": "html", "record": "record"}


def claim(db: Database, contract_id: str, month: str, now: dt.datetime | None = None) -> bool:
    """Take the right to generate (contract, month); False when done, or being made by someone else."""
    now = now or utcnow()
    r = reports.c
    with db.write() as conn:
        ins = db.insert(reports).values(contract_id=contract_id, month=month, status="running", attempts=1,
                                        claimed_at=now).on_conflict_do_nothing(index_elements=[r.contract_id, r.month])
        if conn.execute(ins.returning(r.id)).first() is not None:
            return True
        got = conn.execute(update(reports).where(and_(
            r.contract_id == contract_id, r.month == month,
            or_(and_(r.status == "running", r.claimed_at < now - STALE),
                and_(r.status == "failed", r.attempts < MAX_ATTEMPTS))))
            .values(status="running", claimed_at=now, attempts=r.attempts + 1))
        return bool(got.rowcount)


def save(db: Database, contract_id: str, month: str, files: Any, *, now: dt.datetime | None = None) -> None:
    """Store a rendered report (``ReportFiles``) as done (inserting the row when it was not claimed)."""
    from opscenter.report.signing import record_digest

    now = now or utcnow()
    data = files.data
    summary = {
        "availability_percent": data.operating["availability_percent"],
        "protecting_percent": data.operating["protecting_percent"],
        "outages": sum(1 for o in data.operating["outages"] if o["kind"] == "no_checkin"),
        "threats": data.alarms.total, "blocked": data.alarms.blocked, "high": data.alarms.high,
        "sizes": {"pdf": len(files.pdf), "html": len(files.html.encode()), "record": len(files.record)},
    }
    values = {"status": "done", "generated_at": now, "key_id": _key_id(files.record),
              "record_sha256": record_digest(files.record), "pdf": files.pdf, "html": files.html.encode("utf-8"),
              "record": files.record, "summary": summary, "error": None}
    r = reports.c
    with db.write() as conn:
        done = conn.execute(update(reports).where(and_(r.contract_id == contract_id, r.month == month))
                            .values(**values)).rowcount
        if not done:
            conn.execute(reports.insert().values(contract_id=contract_id, month=month, attempts=1, claimed_at=now,
                                                 **values))


def _key_id(record: bytes) -> str | None:
    import json

    try:
        return str(json.loads(record)["signature"]["key_id"])
    except (ValueError, KeyError, TypeError):
        return None


def fail(db: Database, contract_id: str, month: str, error: str) -> None:
    r = reports.c
    with db.write() as conn:
        conn.execute(update(reports).where(and_(r.contract_id == contract_id, r.month == month))
                     .values(status="failed", error=error[:2000]))


def list_reports(db: Database, contract_id: str | None = None, *, month: str | None = None) -> list[dict[str, Any]]:
    """Stored reports, newest month first: contract_id, month, status, generated_at, key_id, record_sha256,
    summary (availability_percent, protecting_percent, outages, threats, blocked, high, sizes), error.
    The files themselves: :func:`report_file`."""
    r = reports.c
    q = select(r.contract_id, r.month, r.status, r.attempts, r.generated_at, r.key_id, r.record_sha256, r.summary,
               r.error).order_by(r.month.desc(), r.contract_id)
    if contract_id is not None:
        q = q.where(r.contract_id == contract_id)
    if month is not None:
        q = q.where(r.month == month)
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [{**dict(row), "generated_at": iso_z(row["generated_at"]) if row["generated_at"] else None} for row in rows]


def report_file(db: Database, contract_id: str, month: str, kind: str) -> bytes | None:
    """The stored ``pdf``, ``html`` (UTF-8 bytes) or ``record`` of a done report, or None."""
    col = getattr(reports.c, KINDS[kind])
    r = reports.c
    with db.read() as conn:
        return conn.execute(select(col).where(and_(r.contract_id == contract_id, r.month == month,
                                                   r.status == "done"))).scalar()


def contracts_due(db: Database, month: Month) -> list[str]:
    """Contracts in service during ``month`` (service started before its end, license not ended before its
    start) that have no report for it yet, or one that may be claimed again."""
    c, r = contracts.c, reports.c
    now = utcnow()
    with db.read() as conn:
        rows = conn.execute(
            select(c.contract_id).select_from(contracts.outerjoin(reports, and_(
                r.contract_id == c.contract_id, r.month == month.key)))
            .where(and_(c.term_start.is_not(None), c.term_start < month.end,
                        or_(c.term_end.is_(None), c.term_end > month.start),
                        or_(r.id.is_(None),
                            and_(r.status == "running", r.claimed_at < now - STALE),
                            and_(r.status == "failed", r.attempts < MAX_ATTEMPTS))))
            .order_by(c.contract_id)).scalars().all()
    return list(rows)
