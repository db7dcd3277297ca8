"""The alarm queue: triage with a status (new, ack, closed) and a note, kept with its history."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from opscenter.panel import store
from opscenter.panel.explain import explain
from opscenter.panel.pages import found, status_form
from opscenter.panel.web import Auth, NavItem, kit_of, role
from opscenter.textsafe import json_text

router = APIRouter()
NAV = [NavItem("/alarms", "nav.queue", 20)]
FILTERS = ("open", "new", "ack", "closed", "all")


@router.get("/alarms")
def queue(request: Request, a: Auth = Depends(role("operator")), status: str = Query("open"),
          contract: str = Query("", max_length=64)) -> Response:
    kit = kit_of(request)
    status = status if status in FILTERS else "open"
    rows = store.alarm_queue(kit.db, status=status, contract_id=contract or None, limit=200)
    return kit.render(request, "console/alarms.html", alarms=[(x, explain(x["event"])) for x in rows],
                      status=status, filters=FILTERS, contract=contract, statuses=store.TRIAGE_STATUSES)


@router.get("/alarms/{alarm_id}")
def alarm_detail(request: Request, alarm_id: int = Path(ge=1, le=2**62), a: Auth = Depends(role("operator"))
                 ) -> Response:
    kit = kit_of(request)
    row = found(store.alarm, kit.db, alarm_id, None)
    raw = json_text(row["event"], indent=1, sort_keys=True)
    return kit.render(request, "console/alarm.html", alarm=row, x=explain(row["event"]), raw=raw,
                      notes=store.notes(kit.db, alarm_id), statuses=store.TRIAGE_STATUSES)


@router.post("/alarms/{alarm_id}/triage")
async def triage(request: Request, alarm_id: int = Path(ge=1, le=2**62), a: Auth = Depends(role("operator"))
                 ) -> Response:
    kit, form, refused = await status_form(request, store.triage, alarm_id, a.name)
    if refused is not None:
        return refused
    back = str(form.get("back") or "")
    if back.startswith(kit.url("/alarms")) and "//" not in back:
        sep = "&" if "?" in back else "?"
        from fastapi.responses import RedirectResponse

        return RedirectResponse(f"{back}{sep}done=triaged#a{alarm_id}", status_code=303)
    return kit.redirect(f"/alarms/{alarm_id}", done="triaged")


_ = json  # (json_text does the encoding)
