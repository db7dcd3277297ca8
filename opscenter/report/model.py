"""The report's data model: everything one monthly report shows, gathered from the center's tables.
The same model feeds the HTML, the PDF and the signed operating record (its ``operating`` part)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select

from opscenter.db import Database, checkin_months, desired, devices, health
from opscenter.report import figures as fig
from opscenter.report.operating import contract_devices, operating_record
from opscenter.report.period import Month
from opscenter.textsafe import clean
from opscenter.views import portcheck_summary

MAIL_UNINSPECTED = "mail.uninspected"


@dataclass
class BoxStatus:
    """One box of the contract as the report shows it."""

    device_id: str
    serial: str
    hostname: str
    activated_at: dt.datetime
    revoked_at: dt.datetime | None
    agent_version: str | None
    signatures: dict[str, str] = field(default_factory=dict)
    portcheck: dict[str, Any] | None = None  # views.portcheck_summary of the last check-in
    last_checkin_at: dt.datetime | None = None


@dataclass
class MonthStatus:
    """What the check-ins of the month said (checkin_months)."""

    checkins: int = 0
    portcheck_ok: int = 0
    portcheck_failed: int = 0
    engines: dict[str, int] = field(default_factory=dict)  # engine name -> boxes whose check-ins named it
    counters: dict[str, int] = field(default_factory=dict)  # heartbeat counters summed over the month

    @property
    def mail_uninspected(self) -> int | None:
        """Mail the box could not inspect (encrypted) this month; None: not measured (no box of the
        contract reported the counter this month), 0: measured, and every mail could be inspected."""
        return self.counters.get(MAIL_UNINSPECTED)

    @property
    def portcheck_failed_share(self) -> float | None:
        n = self.portcheck_ok + self.portcheck_failed
        return self.portcheck_failed / n if n else None


@dataclass
class ReportData:
    contract_id: str
    month: Month
    generated_at: dt.datetime
    boxes: list[BoxStatus]
    operating: dict[str, Any]  # the unsigned operating record (opscenter/report/operating.py)
    alarms: fig.AlarmFigures
    status: MonthStatus
    desired_agent: str | None = None

    @property
    def current_boxes(self) -> list[BoxStatus]:
        return [b for b in self.boxes if b.revoked_at is None] or self.boxes[-1:]


def month_status(db: Database, device_ids: list[str], month: Month) -> MonthStatus:
    out = MonthStatus()
    if not device_ids:
        return out
    m = checkin_months.c
    with db.read() as conn:
        rows = conn.execute(select(m.checkins, m.portcheck_ok, m.portcheck_failed, m.engines, m.counters).where(
            and_(m.device_id.in_(device_ids), m.month == month.key))).all()
    for checkins, ok, failed, engines, counters in rows:
        out.checkins += checkins
        out.portcheck_ok += ok
        out.portcheck_failed += failed
        for k, v in (engines or {}).items():
            out.engines[k] = out.engines.get(k, 0) + int(v)
        for k, v in (counters or {}).items():
            if isinstance(v, dict) and not v.get("carried"):  # carried over, not reported this month
                out.counters[k] = out.counters.get(k, 0) + int(v.get("total", 0))
    return out


def _boxes(db: Database, devs: list[dict[str, Any]]) -> list[BoxStatus]:
    ids = [d["device_id"] for d in devs]
    with db.read() as conn:
        bodies = dict(conn.execute(select(health.c.device_id, health.c.body).where(health.c.device_id.in_(ids))).all()) \
            if ids else {}
        last = dict(conn.execute(select(devices.c.device_id, devices.c.last_checkin_at)
                                 .where(devices.c.device_id.in_(ids))).all()) if ids else {}
    out = []
    for d in devs:
        body = bodies.get(d["device_id"]) if isinstance(bodies.get(d["device_id"]), dict) else None
        sigs = (body or {}).get("signatures")
        out.append(BoxStatus(
            device_id=d["device_id"], serial=clean(d["serial"])[:128], hostname=clean(d["hostname"] or "")[:64],
            activated_at=d["activated_at"], revoked_at=d["revoked_at"],
            agent_version=clean(d["agent_version"])[:64] if d["agent_version"] else None,
            signatures={clean(k)[:32]: clean(v)[:64] for k, v in sigs.items()
                        if isinstance(v, (str, int)) and not isinstance(v, bool)} if isinstance(sigs, dict) else {},
            portcheck=portcheck_summary(body), last_checkin_at=last.get(d["device_id"])))
    return out


def build(db: Database, contract_id: str, month: Month, *, misses: int, default_interval: float,
          now: dt.datetime, id_range: tuple[int | None, int | None] | None = None) -> ReportData:
    """The report data of ``contract_id`` for ``month``; LookupError for an unknown contract."""
    record = operating_record(db, contract_id, month, misses=misses, default_interval=default_interval, now=now)
    _, devs = contract_devices(db, contract_id)
    ids = [d["device_id"] for d in devs]
    status = month_status(db, ids, month)
    rows = list(fig.load_alarms(db, ids, month, id_range))
    alarm_figures = fig.compute(rows, month, status.engines)
    with db.read() as conn:
        want = conn.execute(select(desired.c.body).where(desired.c.scope == "*")).scalar() or {}
    agent = want.get("agent_version") if isinstance(want, dict) else None
    return ReportData(contract_id=contract_id, month=month, generated_at=now, boxes=_boxes(db, devs),
                      operating=record, alarms=alarm_figures, status=status,
                      desired_agent=str(agent) if agent else None)
