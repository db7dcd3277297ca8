"""Is the box operating normally: now (last check-in, port check) and over the month (share of the
month checked in, day by day); this month's alarms in short; the installation confirmation slot."""
from __future__ import annotations

import datetime as dt
import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from opscenter.confirm import confirmation_of
from opscenter.db import utcnow
from opscenter.panel import availability, bizdays, store
from opscenter.panel.explain import explain
from opscenter.panel.web import Auth, NavItem, auth, kit_of
from opscenter.report.model import month_status
from opscenter.report.operating import contract_devices
from opscenter.report.period import Month

router = APIRouter()
NAV = [NavItem("/", "nav.status", 10)]


def shift_month(month: str, n: int) -> str:
    y, m = (int(x) for x in month.split("-"))
    m += n
    y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
    return f"{y:04d}-{m:02d}"


def overall(box: dict | None) -> str:
    """ok | warn | down | none: the one word at the top of the page."""
    if box is None:
        return "none"
    if box["status"] != "online":
        return "down"
    pc = box["portcheck"]
    if pc is not None and pc.get("ok") is False:
        return "warn"
    return "ok"


@router.get("/")
def status(request: Request, a: Auth = Depends(auth), month: str | None = None) -> Response:
    kit = kit_of(request)
    now = utcnow()
    this_month = bizdays.month_of(now)
    if not month or not re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", month) or month > this_month:
        month = this_month
    misses = kit.settings.offline_after_missed
    box = store.contract_box(kit.db, a.contract_id, misses, now)
    contract = store.contract(kit.db, a.contract_id) or {}
    report = availability.month_report(kit.db, a.contract_id, month, now, misses, kit.settings.heartbeat_interval)
    start, end = availability.month_bounds(month)
    recent = store.contract_alarms(kit.db, a.contract_id, limit=5, since=start, until=end)
    count = store.count_contract_alarms(kit.db, a.contract_id, start, end)
    _, devs = contract_devices(kit.db, a.contract_id)
    mail_uninspected = month_status(kit.db, [d["device_id"] for d in devs], Month.parse(month)).mail_uninspected
    first_month = bizdays.month_of(contract["term_start"]) if contract.get("term_start") else this_month
    return kit.render(request, "customer/status.html", box=box, state=overall(box), contract=contract,
                      report=report, month=month, mail_uninspected=mail_uninspected, this_month=this_month,
                      prev_month=shift_month(month, -1) if month > first_month else None,
                      next_month=shift_month(month, 1) if month < this_month else None,
                      alarms=[(x, explain(x["event"])) for x in recent], alarm_count=count,
                      today=bizdays.japan_date(now), timedelta=dt.timedelta,
                      install=confirmation_of(kit.db, box["device_id"]) if box else None)
