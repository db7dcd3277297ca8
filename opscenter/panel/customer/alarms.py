"""The contract's alarms, each explained in plain Japanese (opscenter/panel/explain.py)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from opscenter.panel import store
from opscenter.panel.explain import explain
from opscenter.panel.pages import found
from opscenter.panel.web import Auth, NavItem, auth, kit_of

router = APIRouter()
NAV = [NavItem("/alarms", "nav.alarms", 20)]
PER_PAGE = 50


@router.get("/alarms")
def alarm_list(request: Request, a: Auth = Depends(auth), page: int = Query(1, ge=1, le=10_000)) -> Response:
    kit = kit_of(request)
    rows = store.contract_alarms(kit.db, a.contract_id, limit=PER_PAGE + 1, offset=(page - 1) * PER_PAGE)
    return kit.render(request, "customer/alarms.html", alarms=[(x, explain(x["event"])) for x in rows[:PER_PAGE]],
                      page=page, more=len(rows) > PER_PAGE)


@router.get("/alarms/{alarm_id}")
def alarm_detail(request: Request, alarm_id: int = Path(ge=1, le=2**62), a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    row = found(store.alarm, kit.db, alarm_id, a.contract_id)
    return kit.render(request, "customer/alarm.html", alarm=row, x=explain(row["event"]))
